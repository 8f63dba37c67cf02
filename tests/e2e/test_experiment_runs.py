"""Experiments on a real stack (redis-server with AOF, uvicorn, three Celery workers, DeepSpeed
ranks): a 2 modes x 2 seeds grid runs to the end with never more than max_parallel jobs
running, through a worker killed and the API restarted mid-experiment, and its aggregates
match numbers worked out from the jobs' own records; cancel stops every job."""

from __future__ import annotations

import csv
import io
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from service.cli.client import Client
from service.core.contract.vocabulary import FINAL_STATUSES, MAX_STEPS
from service.core.records import JobRecord
from tests.e2e.stack import KEYS, ROOT, rank_pids, start_api, stop, wait_for
from tests.e2e.test_faults import FaultStack, fault_stack, spec

T95_DF1 = 12.706204736  # two-sided 95% Student t for 1 degree of freedom, from a printed table
MAIN = "eval_accuracy"  # RTE's main metric


def grid(stack: FaultStack, steps: int, max_parallel: int, **over: Any) -> dict[str, Any]:
    base = spec(stack.model, steps, eval_every=steps // 2, save_every=steps // 2)
    body: dict[str, Any] = {
        "name": "f vs vanilla",
        "base": base,
        "axes": {"childtuning.mode": ["vanilla", "childtuning-f"], "hyperparameters.seed": [1, 2]},
        "baseline": {"childtuning.mode": "vanilla"},
        "max_parallel": max_parallel,
    }
    body.update(over)
    return body


def job_records(stack: FaultStack, exp: dict[str, Any]) -> list[JobRecord]:
    records = stack.store.get_jobs(j["id"] for j in exp["jobs"])
    assert all(r is not None for r in records)
    return [r for r in records if r is not None]


def max_overlap(records: list[JobRecord]) -> int:
    """The most jobs whose [started, finished] intervals overlap at one instant."""
    edges = sorted(
        [(r.started_at, 1) for r in records if r.started_at is not None]
        + [(r.finished_at, -1) for r in records if r.finished_at is not None]
    )
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def test_an_experiment_survives_a_killed_worker_and_a_restarted_api_with_exact_aggregates(
    tmp_path: Path,
) -> None:
    steps = 12
    with fault_stack(tmp_path) as stack:
        stack.add_worker("w2")
        stack.add_worker("w3")  # three idle workers, max_parallel 2: the third must stay idle
        client = stack.client
        exp = client.submit_experiment(grid(stack, steps, max_parallel=2))
        exp_id = exp["id"]
        assert exp["counts"]["waiting"] == 2 and len(exp["jobs"]) == 4
        peak = 0

        def running() -> list[JobRecord]:
            nonlocal peak
            now = [r for r in job_records(stack, exp) if r.status == "running"]
            peak = max(peak, len(now))
            return now

        # A worker killed while it runs one of the experiment's jobs.
        victim = wait_for(lambda: running() or None, 240, "a job of the experiment to start")[0]
        worker = {f"w{i + 1}@test": proc for i, proc in enumerate(stack.workers)}[str(victim.worker)]
        worker.kill()
        worker.wait()
        # The API restarted once a job has finished: the same jobs and scores after it.
        wait_for(
            lambda: running() is not None and any(r.status == "succeeded" for r in job_records(stack, exp)),
            300,
            "a job of the experiment to succeed",
        )
        before = client.get_experiment(exp_id)
        stop(stack.api)
        stack.api, stack.url = start_api(stack.env, stack.base / "api2.log")
        client = Client(stack.url, KEYS["alice"])
        after = client.get_experiment(exp_id)
        done = [j for j in before["jobs"] if j["status"] in FINAL_STATUSES]
        assert done and all(j in after["jobs"] for j in done), (done, after["jobs"])
        assert after["axes"] == before["axes"] and after["baseline"] == before["baseline"]
        wait_for(
            lambda: running() is not None and client.get_experiment(exp_id)["status"] in FINAL_STATUSES,
            400,
            "the experiment to finish",
        )
        final = client.get_experiment(exp_id)
        records = job_records(stack, exp)
        assert final["status"] == "succeeded", (final["jobs"], stack.logs(victim.id))
        # The bound held. (Whether two ever ran at the same instant depends on the jobs' speeds:
        # that two were sent at once is the waiting == 2 above.)
        assert peak <= 2 and max_overlap(records) <= 2, (peak, max_overlap(records))
        killed = next(r for r in records if r.id == victim.id)
        assert killed.attempts == 2  # resumed by another worker: no cell lost
        assert final["counts"] == {
            "waiting": 0, "queued": 0, "running": 0, "succeeded": 4, "failed": 0, "cancelled": 0,
        }  # fmt: skip

        # The aggregates, from the jobs' own final evaluations.
        score = {
            (j["values"]["childtuning.mode"], j["values"]["hyperparameters.seed"]): client.get_job(j["id"])[
                "final_metrics"
            ][MAIN]
            for j in final["jobs"]
        }
        assert final["metric"] == "accuracy" and final["score"] == "final"
        cells = {c["values"]["childtuning.mode"]: c for c in final["cells"]}
        for mode in ("vanilla", "childtuning-f"):
            values = [score[(mode, 1)], score[(mode, 2)]]
            cell = cells[mode]
            assert cell["n"] == 2 and cell["scores"] == {"1": values[0], "2": values[1]}
            assert math.isclose(cell["mean"], statistics.mean(values), abs_tol=1e-12)
            assert math.isclose(cell["std"], statistics.stdev(values), abs_tol=1e-12)
            assert (cell["min"], cell["max"]) == (min(values), max(values))
        diffs = [score[("childtuning-f", s)] - score[("vanilla", s)] for s in (1, 2)]
        mean = statistics.mean(diffs)
        half = T95_DF1 * statistics.stdev(diffs) / math.sqrt(2)
        vs = cells["childtuning-f"]["vs_baseline"]
        assert vs["n"] == 2 and math.isclose(vs["mean_diff"], mean, abs_tol=1e-12)
        assert math.isclose(vs["ci95"][0], mean - half, abs_tol=1e-6)
        assert math.isclose(vs["ci95"][1], mean + half, abs_tol=1e-6)
        expected = "better" if mean - half > 0 else "worse" if mean + half < 0 else "within noise"
        assert vs["verdict"] == expected
        best_mode = max(cells, key=lambda m: statistics.mean([score[(m, 1)], score[(m, 2)]]))
        assert final["best_cell"] == cells[best_mode]["label"]

        # Curves: at each eval step, the mean over the cell's two seeds of the jobs' records.
        curves = client.experiment_curves(exp_id)
        for cell in curves["cells"]:
            ids = cells[cell["values"]["childtuning.mode"]]["jobs"]
            by_step: dict[int, list[float]] = {}
            for job_id in ids:
                for r in client.all_records(job_id, "metrics"):
                    if r["kind"] == "eval":
                        by_step.setdefault(r["step"], []).append(r[MAIN])
            assert [p["step"] for p in cell["points"]] == sorted(by_step), (cell, by_step)
            assert {steps // 2, steps} <= set(by_step)
            for point in cell["points"]:
                assert point["n"] == 2
                assert math.isclose(point["mean"], statistics.mean(by_step[point["step"]]), abs_tol=1e-12)

        # The plots and the CLI's comparison table read the same experiment.
        for plot in client.experiment_plots(exp_id):
            path = client.download_plot(exp_id, plot["name"], tmp_path / plot["name"])
            assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert (stack.artifacts / "experiments" / exp_id / "plots" / "curves.png").is_file()
        env = {**stack.env, "CHILDTUNE_API_URL": stack.url, "CHILDTUNE_API_KEY": KEYS["alice"]}
        out = subprocess.run(
            [sys.executable, "-m", "service.cli", "experiment", "compare", exp_id, "--csv"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        rows = list(csv.DictReader(io.StringIO(out)))
        assert len(rows) == 2, out
        watched = subprocess.run(
            [sys.executable, "-m", "service.cli", "experiment", "watch", exp_id],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert watched.returncode == 0 and vs["verdict"] in watched.stdout, (watched.stdout, watched.stderr)


def test_cancel_stops_every_job_of_an_experiment(tmp_path: Path) -> None:
    with fault_stack(tmp_path) as stack:
        stack.add_worker("w2")
        client = stack.client
        # Jobs too long to finish within the test (MAX_STEPS): whichever of the two sent first
        # trains faster, neither can finish before the cancel, so every job is cancelled.
        exp = client.submit_experiment(grid(stack, MAX_STEPS, max_parallel=2))
        ids = [j["id"] for j in exp["jobs"]]
        wait_for(
            lambda: sum(client.get_job(i)["progress"]["step"] >= 1 for i in ids) == 2,
            240,
            "two jobs to train",
        )
        started = time.monotonic()
        client.cancel_experiment(exp["id"])
        wait_for(lambda: client.get_experiment(exp["id"])["status"] == "cancelled", 60, "every job cancelled")
        took = time.monotonic() - started
        final = client.get_experiment(exp["id"])
        assert final["counts"]["cancelled"] == 4, final["counts"]
        for job_id in ids:
            wait_for(lambda job_id=job_id: rank_pids(stack.job_dir(job_id)) == [], 30, f"{job_id}'s ranks")
        never = [j for j in final["jobs"] if client.get_job(j["id"])["started_at"] is None]
        assert len(never) == 2  # the waiting ones never ran
        print(f"experiment cancel: every job cancelled {took:.1f} s after the request")
