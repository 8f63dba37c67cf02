"""A worker stopped mid-job (SIGTERM, as `docker stop` sends) gives the job back to the queue,
and the next worker resumes it from its checkpoint: every step once, no rank left behind."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from service.cli.client import Client
from tests.e2e.stack import (
    KEYS,
    RedisServer,
    model_root,
    rank_pids,
    service_env,
    start_api,
    start_worker,
    stop,
    wait_for,
    write_tiny_model,
)


def test_sigterm_requeues_the_job_and_the_next_worker_resumes_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    env = service_env(server.url, tmp_path / "artifacts")
    api, url = start_api(env, tmp_path / "api.log")
    workers = []
    try:
        workers.append(start_worker(env, tmp_path / "worker1.log", "first@test", url))
        client = Client(url, KEYS["alice"])
        spec = {
            "model": str(write_tiny_model(model_root(env) / "tiny")),
            "dataset": {"preset": "glue/rte", "max_train_examples": 32, "max_eval_examples": 16},
            "childtuning": {"mode": "childtuning-f", "reserve_p": 0.5},
            "hyperparameters": {
                "max_steps": 60, "batch_size": 8, "learning_rate": 1e-3, "max_seq_length": 32,
                "eval_every": 60, "save_every": 5, "seed": 5,
            },
            "resources": {"num_ranks": 1, "zero_stage": 2, "device": "cpu"},
        }  # fmt: skip
        job_id = client.submit(spec)["id"]
        job_dir = tmp_path / "artifacts" / "jobs" / job_id
        wait_for(lambda: client.get_job(job_id)["progress"]["step"] >= 12, 180, "two checkpoints")
        workers[0].send_signal(signal.SIGTERM)
        wait_for(lambda: client.get_job(job_id)["status"] == "queued", 30, "the job back in the queue")
        wait_for(lambda: rank_pids(job_dir) == [], 15, "the ranks to stop")
        workers[0].wait(60)
        first = client.get_job(job_id)
        assert first["attempts"] == 1 and first["worker"] is None
        stopped_at = first["progress"]["step"]
        assert stopped_at < 60
        time.sleep(1)
        assert client.get_job(job_id)["status"] == "queued"  # nobody runs it without a worker
        workers.append(start_worker(env, tmp_path / "worker2.log", "second@test", url))
        wait_for(lambda: client.get_job(job_id)["status"] in ("succeeded", "failed"), 240, "the resumed job")
        final = client.get_job(job_id)
        assert final["status"] == "succeeded", final
        assert final["attempts"] == 2 and final["worker"] == "second@test"
        steps = [r["step"] for r in client.all_records(job_id, "metrics") if r["kind"] == "train"]
        assert steps == list(range(1, 61))
        assert "resumed" in [e["type"] for e in client.all_records(job_id, "events")]
    finally:
        for worker in workers:
            stop(worker)
        stop(api)
        server.stop()
