"""A worker running two jobs at once (`childtune worker --concurrency 2`): both run together, and
the cores are shared: each CPU job gets cores // 2 threads, split again over its ranks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Stack, running_stack, wait_for
from workers.launch import cpu_threads

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def two_slot_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No OMP_NUM_THREADS from the test's environment: the worker sets the budget itself.
    base = tmp_path_factory.mktemp("two-slots")
    without = ("OMP_NUM_THREADS",)
    with running_stack(base, "two-slots@test", "tiny", concurrency=2, env_without=without) as stack:
        yield stack


def spec(model: Path, ranks: int, seed: int) -> dict[str, Any]:
    return {
        "model": str(model),
        "dataset": {"preset": "glue/rte", "max_train_examples": 64, "max_eval_examples": 16},
        "childtuning": {"mode": "childtuning-f", "reserve_p": 0.3},
        "hyperparameters": {
            "max_steps": 60,
            "batch_size": 8,
            "max_seq_length": 32,
            "eval_every": 20,
            "seed": seed,
        },
        "resources": {"num_ranks": ranks, "zero_stage": 2, "device": "cpu"},
    }


def test_two_jobs_run_at_once_and_share_the_cores(two_slot_stack: Stack) -> None:
    client = two_slot_stack.client()
    ids = [client.submit(spec(two_slot_stack.model, ranks, seed))["id"] for ranks, seed in ((1, 1), (2, 2))]

    def both_running() -> bool:
        return all(client.get_job(i)["status"] == "running" for i in ids)

    # One worker, two slots: the second job starts while the first still runs.
    wait_for(both_running, 300, "both jobs running at once on one worker")
    wait_for(lambda: all(client.get_job(i)["status"] in FINAL for i in ids), 600, "both jobs finished", 1)
    jobs = [client.get_job(i) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], [j.get("error") for j in jobs]
    first, second = jobs
    assert first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]
    budget = max(1, (os.cpu_count() or 1) // 2)
    for job, ranks in zip(jobs, (1, 2), strict=True):
        started = [e for e in client.all_records(job["id"], "events") if e["type"] == "started"]
        assert started and started[0]["world_size"] == ranks
        assert started[0]["cpu_threads"] == max(1, budget // ranks), started[0]


@pytest.mark.parametrize(
    ("omp", "ranks", "cores", "expected"),
    [
        (None, 1, 2, 2),  # no budget: every core
        (None, 2, 2, 1),
        ("1", 1, 2, 1),  # a worker of concurrency 2 on 2 cores
        ("8", 2, 16, 4),
        ("8", 16, 16, 1),  # never 0
        ("0", 2, 16, 8),  # not a positive integer: every core
        ("x", 1, 4, 4),
    ],
)
def test_cpu_threads_split_the_budget_over_the_ranks(
    monkeypatch: pytest.MonkeyPatch, omp: str | None, ranks: int, cores: int, expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    env = {} if omp is None else {"OMP_NUM_THREADS": omp}
    assert cpu_threads(env, ranks) == expected
