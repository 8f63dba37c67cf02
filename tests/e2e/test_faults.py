"""Faults on a real stack (redis-server with AOF, uvicorn, a Celery worker, DeepSpeed ranks): every
way a job's supervisor or store can die ends with the job resumed or failed with a reason, its
streams complete, and no rank left behind. Each test has a stack of its own, so one failure
stays in its own test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.client import Client, ClientError
from service.core.jobdir import read_jsonl, read_status
from service.core.records import JobRecord
from service.core.store import Store
from tests.e2e.stack import (
    KEYS,
    RedisServer,
    model_root,
    mount_tmpfs,
    process_alive,
    rank_pids,
    service_env,
    start_api,
    start_worker,
    stop,
    wait_for,
    write_tiny_model,
)

# The test environment's CHILDTUNE_HEARTBEAT_TTL_S (6 s) bounds how long a dead supervisor goes
# unnoticed; a job is resumed or settled within a few times that.
SETTLE_S = 120


@dataclass
class FaultStack:
    base: Path
    env: dict[str, str]
    redis: RedisServer
    url: str
    api: subprocess.Popen[bytes]
    model: Path
    artifacts: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def client(self) -> Client:
        return Client(self.url, KEYS["alice"])

    @property
    def store(self) -> Store:
        return Store.from_url(self.redis.url, timeout_s=2)

    def job_dir(self, job_id: str) -> Path:
        return self.artifacts / "jobs" / job_id

    def add_worker(self, name: str) -> subprocess.Popen[bytes]:
        proc = start_worker(self.env, self.base / f"{name}.log", f"{name}@test", self.url)
        self.workers.append(proc)
        return proc

    def logs(self, job_id: str) -> str:
        parts = []
        for name in ("launcher.log", "status.json"):
            with contextlib.suppress(OSError):
                parts.append((self.job_dir(job_id) / name).read_text()[-2000:])
        for log in sorted(self.base.glob("*.log")):
            parts.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-2500:])
        return "\n".join(parts)


@contextlib.contextmanager
def fault_stack(
    base: Path, *, artifacts: Path | None = None, first_worker: bool = True
) -> Iterator[FaultStack]:
    redis_server = RedisServer(base / "redis")
    redis_server.start()
    artifacts = artifacts or base / "artifacts"
    env = service_env(redis_server.url, artifacts)
    env["CHILDTUNE_MODEL_ROOTS"] = str(base / "models")
    api, url = start_api(env, base / "api.log")
    model = write_tiny_model(model_root(env) / "tiny")
    stack = FaultStack(base, env, redis_server, url, api, model, artifacts)
    try:
        if first_worker:
            stack.add_worker("w1")
        yield stack
    finally:
        for proc in stack.workers:
            stop(proc)
        stop(stack.api)  # the one running now (a test may have restarted it)
        redis_server.stop()


def spec(model: Path, steps: int, **hyper: Any) -> dict[str, Any]:
    return {
        "model": str(model),
        "dataset": {"preset": "glue/rte", "max_train_examples": 32, "max_eval_examples": 16},
        "childtuning": {"mode": "childtuning-f", "reserve_p": 0.5},
        "hyperparameters": {
            "max_steps": steps, "batch_size": 8, "learning_rate": 1e-3, "max_seq_length": 32,
            "eval_every": steps, "save_every": 5, "seed": 7, **hyper,
        },
        "resources": {"num_ranks": 1, "zero_stage": 2, "device": "cpu"},
    }  # fmt: skip


def file_step(stack: FaultStack, job_id: str) -> int:
    return int(read_status(stack.job_dir(job_id)).get("step") or 0)


def file_status(stack: FaultStack, job_id: str) -> str | None:
    return read_status(stack.job_dir(job_id)).get("status")


def assert_streams_complete(stack: FaultStack, job_id: str, steps: int) -> None:
    """The API's streams hold every record of the job directory once, in order; the job record
    is final and says what the files say."""
    client = stack.client
    metrics = client.all_records(job_id, "metrics")
    train = [r["step"] for r in metrics if r["kind"] == "train"]
    assert train == list(range(1, steps + 1)), train
    events = [e for e in client.all_records(job_id, "events") if "seq" in e]  # (the job folder's)
    seqs = [e["seq"] for e in events]
    on_disk = read_jsonl(stack.job_dir(job_id) / "events.jsonl")
    assert seqs == list(range(1, len(on_disk) + 1)), (seqs, len(on_disk))
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "succeeded"
    job = client.get_job(job_id)
    last_phase = [e["phase"] for e in on_disk if e["type"] == "phase"][-1]
    assert job["phase"] == last_phase, (job["phase"], last_phase)
    assert job["progress"]["step"] == steps and job["finished_at"] is not None


def job_when_up(client: Client, job_id: str) -> dict[str, Any]:
    """The job, or ``{}`` while the API answers 503 (the store is away, or was a moment ago: the
    API backs off for a second after a failure, as its Retry-After says)."""
    try:
        return client.get_job(job_id)
    except ClientError as exc:
        if exc.status == 503:
            return {}
        raise


def test_redis_killed_mid_job_and_at_its_end_loses_nothing(tmp_path: Path) -> None:
    """Defects 3 and 5: a Redis blip used to cut the streams for good (the sink was dropped),
    and a job finishing while Redis was down stayed ``running`` forever."""
    steps = 60
    with fault_stack(tmp_path) as stack:
        client = stack.client
        job_id = client.submit(spec(stack.model, steps))["id"]
        wait_for(lambda: client.get_job(job_id)["progress"]["step"] >= 5, 240, "training to start")
        # 1. Redis SIGKILLed mid-job: the API answers 503 with Retry-After; training goes on.
        port = stack.redis.port
        assert stack.redis.proc is not None
        stack.redis.proc.kill()
        stack.redis.proc.wait()
        down = httpx.get(
            f"{stack.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEYS['alice']}"}
        )
        assert down.status_code == 503, down.text
        assert int(down.headers["Retry-After"]) > 0 and down.json()["error"]["code"] == "store_unavailable"
        at_kill = file_step(stack, job_id)
        wait_for(lambda: file_step(stack, job_id) >= at_kill + 5, 120, "training to go on without Redis")
        stack.redis = RedisServer(tmp_path / "redis", port=port)  # the same AOF
        stack.redis.start()
        back = time.monotonic()
        caught_up = at_kill + 5
        wait_for(
            lambda: job_when_up(client, job_id).get("progress", {}).get("step", 0) >= caught_up,
            60,
            "the streams to catch up",
        )
        catch_up_s = time.monotonic() - back
        # 2. Redis SIGKILLed again; the job finishes while it is down.
        wait_for(lambda: file_step(stack, job_id) >= steps - 20, 240, "most of the job")
        assert stack.redis.proc is not None
        stack.redis.proc.kill()
        stack.redis.proc.wait()
        wait_for(lambda: file_status(stack, job_id) == "succeeded", 240, "the job to finish without Redis")
        wait_for(lambda: rank_pids(stack.job_dir(job_id)) == [], 30, "the launcher to exit")
        time.sleep(2)  # Redis stays down a while after the end (the task retries meanwhile)
        stack.redis = RedisServer(tmp_path / "redis", port=port)
        stack.redis.start()
        back = time.monotonic()
        wait_for(
            lambda: job_when_up(client, job_id).get("status") not in (None, "running"), 60, "the final status"
        )
        final_s = time.monotonic() - back
        job = client.get_job(job_id)
        assert job["status"] == "succeeded", (job, stack.logs(job_id))
        assert_streams_complete(stack, job_id, steps)
        print(f"redis restarted: streams caught up in {catch_up_s:.1f} s, final status {final_s:.1f} s after")


def _task_pid(job_dir: Path) -> int:
    """The pid of the task (Celery pool child) supervising the job: the launcher's parent."""
    for pid in rank_pids(job_dir):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "workers.launch" in cmd:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(stat[1])
    raise AssertionError(f"no launcher for {job_dir}")


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if process_alive(pid)]


def start_past_two_checkpoints(stack: FaultStack, steps: int) -> tuple[str, Path, list[int]]:
    """Submit a job and wait for its second checkpoint: its id, folder and processes then."""
    client = stack.client
    job_id = client.submit(spec(stack.model, steps))["id"]
    wait_for(lambda: client.get_job(job_id)["progress"]["step"] >= 12, 240, "two checkpoints")
    job_dir = stack.job_dir(job_id)
    return job_id, job_dir, rank_pids(job_dir)


def assert_resumed_once(stack: FaultStack, job_id: str, steps: int) -> None:
    """The job ends succeeded on its second start, resumed from a checkpoint, every step once."""
    client = stack.client
    wait_for(lambda: client.get_job(job_id)["status"] in ("succeeded", "failed"), 300, "the resumed job")
    job = client.get_job(job_id)
    assert job["status"] == "succeeded", (job, stack.logs(job_id))
    assert job["attempts"] == 2
    assert_streams_complete(stack, job_id, steps)
    assert any(e["type"] == "resumed" for e in client.all_records(job_id, "events"))


def test_task_process_killed_leaves_no_orphan_and_the_job_resumes(tmp_path: Path) -> None:
    """Defect 4: killing the task process (as the OOM killer would) orphaned the ranks, and the
    redelivered message was dropped because the job was ``running``."""
    steps = 60
    with fault_stack(tmp_path) as stack:
        client = stack.client
        job_id, job_dir, old = start_past_two_checkpoints(stack, steps)
        task = _task_pid(job_dir)
        os.kill(task, signal.SIGKILL)
        killed_at = time.monotonic()
        # The old launcher and ranks stop (TERM, then KILL after the launcher's grace period).
        wait_for(lambda: _alive(old) == [], 60, "the old run's processes to exit")
        orphan_s = time.monotonic() - killed_at
        # The job is taken over and finishes, every step once.
        wait_for(lambda: client.get_job(job_id)["attempts"] >= 2, SETTLE_S, "the job to be taken over")
        resumed_s = time.monotonic() - killed_at
        assert_resumed_once(stack, job_id, steps)
        print(f"task killed: old run gone after {orphan_s:.1f} s, job taken over after {resumed_s:.1f} s")


def test_worker_killed_mid_job_the_next_worker_resumes_it(tmp_path: Path) -> None:
    """SIGKILL to the worker's main process: Celery's pool child dies with it (a parent-death
    SIGKILL), the launcher then stops the ranks (its own parent-death signal), and another
    worker's reaper requeues the job once the dead worker's heartbeat is older than the TTL; that
    worker resumes it from its checkpoint with every step once."""
    steps = 60
    with fault_stack(tmp_path) as stack:
        client = stack.client
        job_id, _, old = start_past_two_checkpoints(stack, steps)
        stack.workers[0].kill()  # the main process only, as `kill -9 <pid>` would
        stack.workers[0].wait()
        killed_at = time.monotonic()
        wait_for(lambda: _alive(old) == [], 60, "the dead worker's ranks to exit")
        orphan_s = time.monotonic() - killed_at
        stack.add_worker("w2")
        wait_for(
            lambda: client.get_job(job_id)["worker"] == "w2@test", SETTLE_S, "the next worker to take it"
        )
        resumed_s = time.monotonic() - killed_at
        assert_resumed_once(stack, job_id, steps)
        print(f"worker killed: old run gone after {orphan_s:.1f} s, resumed by w2 after {resumed_s:.1f} s")


def test_a_stored_spec_naming_server_files_is_refused_by_the_worker(tmp_path: Path) -> None:
    """Defence in depth for defect 1: a job record written by an older API (or by hand) that
    names /proc/self/environ fails on the worker without reading it or echoing anything."""
    from service.core.queue import enqueue, make_celery
    from service.core.settings import Settings

    with fault_stack(tmp_path) as stack:
        base = spec(stack.model, 2)
        resolved = {**base, "model": str(stack.model.resolve())}
        resolved["dataset"] = {
            "train_file": "/proc/self/environ", "eval_file": "/proc/self/environ", "text_column": "a",
            "label_column": "b", "task_type": "classification", "file_format": "csv",
        }  # fmt: skip
        record = stack.store.create_job(
            JobRecord(
                id="job-00000000000000ee", tenant="alice", spec=base, resolved_spec=resolved, queue="cpu-x1"
            )
        )
        enqueue(make_celery(Settings(redis_url=stack.redis.url)), record.id, record.queue)
        wait_for(lambda: stack.client.get_job(record.id)["status"] == "failed", 120, "the refusal")
        job = stack.client.get_job(record.id)
        assert "not one of its tenant's uploads" in job["error"], job
        for secret in (*KEYS.values(), "CHILDTUNE_", "PATH="):
            assert secret not in json.dumps(job)
        assert not (stack.job_dir(record.id) / "job.json").exists()  # nothing was started


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _assert_whole(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> None:
    """Each checkpoint in ``after`` has the files the ``before`` ones have, and each large file
    (weights, optimizer states: sizes fixed by the shapes) the size it had in every one of them."""
    layouts = list(before.values())
    names = set(layouts[0])
    assert all(set(b) == names for b in layouts), [sorted(b) for b in layouts]
    fixed = {n: layouts[0][n] for n in names if layouts[0][n] >= 1 << 16}
    assert fixed, layouts  # the tensors' files
    assert all(b[n] == size for b in layouts for n, size in fixed.items()), layouts
    for tag, files in after.items():
        assert set(files) == names, (tag, sorted(set(files) ^ names))
        for name, size in fixed.items():
            assert files[name] == size, (tag, name, files[name], size)


def test_a_full_disk_fails_the_job_clearly_and_keeps_earlier_checkpoints(tmp_path: Path) -> None:
    """The artifact folder fills up mid-job: the job fails with a reason that says so, the
    earlier complete checkpoints are intact, and no rank is left."""
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "64m"):
        pytest.skip("cannot mount a small tmpfs here (needs root): no full disk to make")
    try:
        with fault_stack(tmp_path, artifacts=disk) as stack:
            client = stack.client
            job_id = client.submit(spec(stack.model, 200))["id"]
            job_dir = stack.job_dir(job_id)
            ckpts = job_dir / "checkpoints"
            wait_for(lambda: len(list(ckpts.glob("step-*/COMPLETE"))) >= 2, 240, "two checkpoints")
            before = {p.parent.name: _files(p.parent) for p in ckpts.glob("step-*/COMPLETE")}
            filler = disk / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as out:  # fill the disk
                while True:
                    out.write(b"\0" * (1 << 20))
            wait_for(lambda: client.get_job(job_id)["status"] != "running", 240, "the job to stop")
            job = client.get_job(job_id)
            assert job["status"] == "failed", (job, stack.logs(job_id))
            assert "No space left on device" in job["error"] or "bytes free" in job["error"], job["error"]
            wait_for(lambda: rank_pids(job_dir) == [], 30, "no rank left")
            after = {p.parent.name: _files(p.parent) for p in ckpts.glob("step-*/COMPLETE")}
            # The job may have rotated the two seen above out before the disk filled (it trains on
            # while the filler writes): what must hold is that a complete checkpoint is left, none
            # older than those seen, and each one marked complete is whole.
            assert after, (before.keys(), "no complete checkpoint left")
            assert max(after) >= max(before), (before.keys(), after.keys())
            for tag in set(before) & set(after):
                assert after[tag] == before[tag], tag  # unchanged, file by file
            _assert_whole(after, before)
            filler.unlink()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
