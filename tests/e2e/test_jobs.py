"""Jobs through REST on a real stack: a 2-rank ZeRO-2 job succeeds and its model downloads;
a cancelled job stops within 10 s and leaves no rank behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.stack import ROOT, Stack, rank_pids, wait_for

FINAL = ("succeeded", "failed", "cancelled")


def tiny_spec(model: Path, **hyper: Any) -> dict[str, Any]:
    return {
        "model": str(model),
        "dataset": {"preset": "glue/rte", "max_train_examples": 32, "max_eval_examples": 16},
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {
            "max_steps": 8,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_seq_length": 32,
            "eval_every": 4,
            "save_every": 4,
            "seed": 3,
            **hyper,
        },
        "resources": {"num_ranks": 2, "zero_stage": 2, "device": "cpu"},
    }


def test_two_rank_zero2_job_succeeds_streams_each_step_once_and_downloads(
    stack: Stack, tmp_path: Path
) -> None:
    client = stack.client()
    job = client.submit(tiny_spec(stack.model))
    assert job["status"] == "queued" and job["queue"] == "cpu-x2"
    job_id = job["id"]
    # Poll like a client would, once a second, passing the cursor back each time.
    seen: list[dict[str, Any]] = []
    after = "0"
    deadline = time.monotonic() + 240
    statuses = set()
    while time.monotonic() < deadline:
        status = client.get_job(job_id)["status"]
        statuses.add(status)
        page = client.metrics(job_id, after=after, limit=3)  # small pages: the cursor must carry over
        seen += page["data"]
        after = page["next_cursor"]
        if status in FINAL and not page["data"]:
            break
        time.sleep(1 if not page["data"] else 0)
    final = client.get_job(job_id)
    assert final["status"] == "succeeded", (
        final,
        (stack.artifacts / "jobs" / job_id / "launcher.log").read_text()[-3000:],
    )
    assert "running" in statuses
    train_steps = [r["step"] for r in seen if r["kind"] == "train"]
    assert train_steps == list(range(1, 9)), train_steps
    assert [r["step"] for r in seen if r["kind"] == "eval"] == [4, 8]
    assert len({r["cursor"] for r in seen}) == len(seen)
    assert client.metrics(job_id, after=after)["data"] == []  # nothing new after the end
    assert final["progress"] == {"step": 8, "total_steps": 8, "fraction": 1.0}
    assert final["latest_metrics"]["train"]["step"] == 8 and final["best_metrics"]["is_best"]
    events = [e["type"] for e in client.all_records(job_id, "events")]
    assert {"started", "phase", "fisher", "checkpoint"} <= set(events) and events[-1] == "finished"
    assert client.mask(job_id)["num_elements"] > 0
    names = [c["name"] for c in client.checkpoints(job_id)]
    assert names[:2] == ["model", "best"] and any(n.startswith("step-") for n in names)
    folder = client.download(job_id, "model", tmp_path / "model")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.num_labels == 2 and model.config.hidden_size == 16
    # The CLI reads the same job: metrics as CSV, one row per record.
    env = {**stack.env, "CHILDTUNE_API_URL": stack.url, "CHILDTUNE_API_KEY": "key-alice-0123456789"}
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "metrics", job_id, "--csv", "--kind", "train"],
        capture_output=True, text=True, env=env, cwd=ROOT, check=True,
    )  # fmt: skip
    assert len(out.stdout.strip().splitlines()) == 1 + 8
    watched = subprocess.run(
        [sys.executable, "-m", "service.cli", "watch", job_id],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert watched.returncode == 0 and "succeeded" in watched.stdout, watched.stderr
    # the final model's score is its own field; the mask's audit is served and printed
    assert final["final_metrics"]["step"] == 8 and final["final_metrics"]["is_final"]
    audit = client.mask(job_id)["audit"]
    assert audit["kept"] > 0 and audit["changed_outside"] > 0  # not strict: weight decay moved them
    for command in (["status", job_id], ["mask", job_id]):
        shown = subprocess.run(
            [sys.executable, "-m", "service.cli", *command],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert (
            "final eval (step 8)" if command[0] == "status" else "outside the child moved"
        ) in shown.stdout


def test_cancel_mid_run_stops_every_rank_within_10_seconds(stack: Stack) -> None:
    client = stack.client("bob")
    job_id = client.submit(tiny_spec(stack.model, max_steps=5000, eval_every=5000, save_every=5000))["id"]
    job_dir = stack.artifacts / "jobs" / job_id
    wait_for(lambda: client.get_job(job_id)["progress"]["step"] >= 2, 180, "training to start")
    assert len(rank_pids(job_dir)) >= 3  # the launcher and its 2 ranks
    asked = time.monotonic()
    answer = client.cancel(job_id)
    assert answer["cancel_requested"] and answer["status"] in ("running", "cancelled")
    wait_for(lambda: client.get_job(job_id)["status"] == "cancelled", 10, "the cancel")
    assert time.monotonic() - asked <= 10
    assert rank_pids(job_dir) == []
    step = client.get_job(job_id)["progress"]["step"]
    time.sleep(1.5)
    assert client.get_job(job_id)["progress"]["step"] == step  # nothing trains any more
    assert client.get_job(job_id)["status"] == "cancelled"
