"""Jobs across machines (issue 24) on one machine: three ``childtune worker`` processes act as
nodes (distinct names, their own scratch folders, one shared artifacts folder, loopback
addresses), every job goes through REST, and each node's ranks are started by torchrun with the
c10d rendezvous hosted by node 0 (gloo on CPU)."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from childtuning import load_full_mask
from service.cli.commands import print_job_summary
from service.core.jobdir import read_status
from service.core.store import Store
from tests.e2e.stack import process_alive, rank_pids, start_worker, wait_for
from tests.e2e.test_faults import FaultStack, assert_streams_complete, fault_stack
from tests.e2e.test_faults import spec as one_machine_spec

SETTLE_S = 240
NODES = ("node-a", "node-b", "node-c")


def gang_env(stack: FaultStack, name: str, **extra: str) -> dict[str, str]:
    """A node's environment: the stack's, with its own scratch folders and a loopback address."""
    scratch = stack.base / "scratch" / name
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        **stack.env,
        "TMPDIR": str(scratch / "tmp"),
        "CHILDTUNE_NODE_ADDR": "127.0.0.1",
        "CHILDTUNE_GANG_RESERVE_S": "30",
        "CHILDTUNE_RENDEZVOUS_TIMEOUT_S": "60",
        "OMP_NUM_THREADS": "1",  # one core per "machine": three of them share this one
        **extra,
    }


def add_node(stack: FaultStack, name: str, **extra: str) -> Any:
    proc = start_worker(gang_env(stack, name, **extra), stack.base / f"{name}.log", f"{name}@test", stack.url)
    stack.workers.append(proc)
    return proc


@contextlib.contextmanager
def node_stack(base: Path, names: tuple[str, ...] = NODES) -> Iterator[FaultStack]:
    """Redis, the API and one worker per name, all on this machine."""
    with fault_stack(base, first_worker=False) as stack:
        for name in names:
            add_node(stack, name)
        yield stack


def spec(model: Path, steps: int, *, nodes: int, ranks: int, **hyper: Any) -> dict[str, Any]:
    """test_faults' tiny job as ChildTuning-D (p 0.3) over ``nodes`` machines, ``ranks`` in all."""
    job = one_machine_spec(model, steps, **hyper)
    job["childtuning"] = {"mode": "childtuning-d", "reserve_p": 0.3}
    job["resources"] = {"nodes": nodes, "num_ranks": ranks, "zero_stage": 2, "device": "cpu"}
    return job


def wait_final(stack: FaultStack, job_id: str, timeout: float = SETTLE_S) -> dict[str, Any]:
    final = ("succeeded", "failed", "cancelled")
    wait_for(lambda: stack.client.get_job(job_id)["status"] in final, timeout, f"job {job_id} to end")
    return stack.client.get_job(job_id)


def train_losses(stack: FaultStack, job_id: str) -> list[tuple[int, float]]:
    return [
        (r["step"], r["loss"]) for r in stack.client.all_records(job_id, "metrics") if r["kind"] == "train"
    ]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with node_stack(tmp_path_factory.mktemp("nodes")) as stack:
        yield stack


def test_a_two_node_d_job_equals_its_one_node_twin(nodes: FaultStack) -> None:
    """2 nodes x 1 rank and 1 node x 2 ranks: the same ChildTuning-D mask bits and the same loss
    at every step (dropout off); the record lists the attempt's two machines."""
    client = nodes.client
    two = client.submit(spec(nodes.model, 8, nodes=2, ranks=2))
    assert two["phase"] == "waiting for 2 nodes" and two["queue"] == "cpu-x1"
    one = client.submit(spec(nodes.model, 8, nodes=1, ranks=2))
    job_two, job_one = wait_final(nodes, two["id"]), wait_final(nodes, one["id"])
    assert job_two["status"] == "succeeded", (job_two, nodes.logs(two["id"]))
    assert job_one["status"] == "succeeded", (job_one, nodes.logs(one["id"]))
    a = load_full_mask(nodes.job_dir(one["id"]) / "masks")
    b = load_full_mask(nodes.job_dir(two["id"]) / "masks")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[name], b[name]) for name in a)
    # Each node's rank wrote its own shard, and together they are the bits of one machine's two
    # ranks, which tests/workers/test_train.py shows equal one rank's: the Fisher selection (its
    # histograms all-reduced) is global over every rank of every node.
    shards = json.loads((nodes.job_dir(two["id"]) / "masks" / "summary.json").read_text())["shards"]
    assert len(shards) == 2, shards
    losses_one, losses_two = train_losses(nodes, one["id"]), train_losses(nodes, two["id"])
    assert [s for s, _ in losses_one] == [s for s, _ in losses_two] == list(range(1, 9))
    worst = max(abs(x - y) for (_, x), (_, y) in zip(losses_one, losses_two, strict=True))
    assert worst <= 1e-5, (losses_one, losses_two)
    (attempt,) = job_two["nodes"]
    workers = [n["worker"] for n in attempt["nodes"]]
    assert attempt["attempt"] == 1 and len(set(workers)) == 2 and set(workers) <= {f"{n}@test" for n in NODES}
    assert all(n["addr"] == "127.0.0.1" for n in attempt["nodes"])
    shown = io.StringIO()
    print_job_summary(job_two, file=shown)  # what `childtune status` prints
    assert f"attempt 1: node 0 {workers[0]} (127.0.0.1), node 1 {workers[1]} (127.0.0.1)" in shown.getvalue()
    started = [e for e in client.all_records(two["id"], "events") if e["type"] == "gang"]
    assert started and "started on node 0" in started[0]["message"], started
    assert_streams_complete(nodes, two["id"], 8)


def test_two_gangs_on_three_nodes_one_waits_neither_deadlocks(nodes: FaultStack) -> None:
    """Two 2-node jobs at once on three workers: never both running (they would need four), the
    second waits in line, and both finish."""
    client = nodes.client
    ids = [client.submit(spec(nodes.model, 10, nodes=2, ranks=2, seed=s))["id"] for s in (1, 2)]
    seen_waiting, both_running = False, False
    deadline = time.monotonic() + 2 * SETTLE_S
    while time.monotonic() < deadline:
        jobs = [client.get_job(i) for i in ids]
        statuses = [j["status"] for j in jobs]
        both_running |= statuses == ["running", "running"]
        seen_waiting |= (
            any(j["status"] == "queued" and j["phase"] == "waiting for 2 nodes" for j in jobs)
            and "running" in statuses
        )
        if all(s in ("succeeded", "failed", "cancelled") for s in statuses):
            break
        time.sleep(0.3)
    jobs = [client.get_job(i) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], [nodes.logs(i) for i in ids]
    assert not both_running
    assert seen_waiting
    assert all(len(j["nodes"]) == 1 for j in jobs)  # each ran once, on its first gang


def test_a_job_wider_than_the_cluster_waits_blocks_nobody_and_cancels(nodes: FaultStack) -> None:
    client = nodes.client
    store = Store.from_url(nodes.redis.url)
    wide = client.submit(spec(nodes.model, 4, nodes=4, ranks=4))
    # Every worker offers itself (each heartbeat) and none is reserved: 3 idle, 4 needed.
    wait_for(lambda: len(store.idle_workers("cpu-x1", 6)) == 3, 60, "three idle workers")
    assert all(store.reservation(i) is None for i in store.idle_workers("cpu-x1", 6))
    job = client.get_job(wide["id"])
    assert (job["status"], job["phase"]) == ("queued", "waiting for 4 nodes")
    small = client.submit(spec(nodes.model, 3, nodes=1, ranks=1))  # the workers are not held
    assert wait_final(nodes, small["id"])["status"] == "succeeded"
    assert client.cancel(wide["id"])["status"] == "cancelled"
    wait_for(lambda: store.waiting_gangs("cpu-x1") == [], 30, "the cancelled job to leave the line")


def test_cancel_stops_every_nodes_ranks_within_ten_seconds(nodes: FaultStack) -> None:
    client = nodes.client
    job_id = client.submit(spec(nodes.model, 400, nodes=2, ranks=2))["id"]
    wait_for(lambda: client.get_job(job_id)["progress"]["step"] >= 2, SETTLE_S, "training to start")
    pids = rank_pids(nodes.job_dir(job_id))
    assert len(pids) >= 6, pids  # per node: a launcher, torchrun and a rank
    asked = time.monotonic()
    client.cancel(job_id)
    wait_for(lambda: not [p for p in pids if process_alive(p)], 10, "every node's processes to exit")
    stopped_s = time.monotonic() - asked
    assert wait_final(nodes, job_id, 60)["status"] == "cancelled"
    print(f"cancel: every node's ranks gone after {stopped_s:.1f} s")


def test_the_second_nodes_worker_killed_the_job_resumes_on_a_new_gang(nodes: FaultStack) -> None:
    """SIGKILL to node 1's worker mid-job: every process of the attempt ends, the job waits for
    two free workers (two are left) and resumes from its checkpoint, every step once."""
    client = nodes.client
    steps = 40
    job_id = client.submit(spec(nodes.model, steps, nodes=2, ranks=2))["id"]
    wait_for(lambda: client.get_job(job_id)["progress"]["step"] >= 12, SETTLE_S, "two checkpoints")
    job = client.get_job(job_id)
    second = job["nodes"][0]["nodes"][1]["worker"]
    pids = rank_pids(nodes.job_dir(job_id))
    victim = next(p for p, name in zip(nodes.workers, NODES, strict=True) if f"{name}@test" == second)
    victim.kill()  # the worker's main process, as `kill -9` would
    victim.wait()
    killed_at = time.monotonic()
    wait_for(lambda: not [p for p in pids if process_alive(p)], 90, "the attempt's processes to exit")
    gone_s = time.monotonic() - killed_at
    wait_for(lambda: client.get_job(job_id)["attempts"] >= 2, SETTLE_S, "the second attempt")
    resumed_s = time.monotonic() - killed_at
    job = wait_final(nodes, job_id, 2 * SETTLE_S)
    assert job["status"] == "succeeded", (job, nodes.logs(job_id))
    assert job["attempts"] == 2 and len(job["nodes"]) == 2
    assert second not in [n["worker"] for n in job["nodes"][1]["nodes"]]
    assert_streams_complete(nodes, job_id, steps)
    assert any(e["type"] == "resumed" for e in client.all_records(job_id, "events"))
    assert read_status(nodes.job_dir(job_id))["status"] == "succeeded"
    print(f"node killed: the attempt's processes gone after {gone_s:.1f} s, resumed after {resumed_s:.1f} s")


def test_a_job_folder_that_is_not_shared_fails_at_once_naming_the_setting(tmp_path: Path) -> None:
    with node_stack(tmp_path, names=("node-a",)) as stack:
        add_node(stack, "node-z", CHILDTUNE_ARTIFACTS=str(tmp_path / "elsewhere"))
        job_id = stack.client.submit(spec(stack.model, 4, nodes=2, ranks=2))["id"]
        job = wait_final(stack, job_id, SETTLE_S)
        assert job["status"] == "failed", job
        assert "CHILDTUNE_ARTIFACTS" in job["error"] and "shared filesystem" in job["error"], job["error"]
        assert job["attempts"] == 0 and not rank_pids(stack.job_dir(job_id))
        store = Store.from_url(stack.redis.url)
        assert store.waiting_gangs("cpu-x1") == []


def test_a_reserved_node_that_never_joins_sends_the_job_back_in_line(tmp_path: Path) -> None:
    """A worker dies right after offering itself: the gang that picked it never forms, is
    released after CHILDTUNE_GANG_RESERVE_S, and the job waits again (nothing held meanwhile);
    with a new worker it runs, once."""
    with fault_stack(tmp_path, first_worker=False) as stack:
        # A long heartbeat TTL: the dead worker still counts as idle when the job arrives.
        extra = {"CHILDTUNE_HEARTBEAT_TTL_S": "30", "CHILDTUNE_GANG_RESERVE_S": "8"}
        add_node(stack, "node-a", **extra)
        doomed = add_node(stack, "node-b", **extra)
        store = Store.from_url(stack.redis.url)
        wait_for(lambda: len(store.idle_workers("cpu-x1", 30)) == 2, 60, "two idle workers")
        doomed.kill()
        doomed.wait()
        client = stack.client
        job_id = client.submit(spec(stack.model, 4, nodes=2, ranks=2))["id"]

        def released() -> list[dict[str, Any]]:
            events = client.all_records(job_id, "events")
            return [e for e in events if e["type"] == "gang" and "did not form" in e["message"]]

        (event,) = wait_for(released, 120, "the gang to be released")
        assert event["joined"] == 1 and event["nodes"] == 2, event
        job = client.get_job(job_id)
        assert (job["status"], job["phase"], job["attempts"]) == ("queued", "waiting for 2 nodes", 0)
        assert not rank_pids(stack.job_dir(job_id))
        add_node(stack, "node-c", **extra)
        job = wait_final(stack, job_id)
        assert job["status"] == "succeeded", (job, stack.logs(job_id))
        assert job["attempts"] == 1
        assert {n["worker"] for n in job["nodes"][0]["nodes"]} == {"node-a@test", "node-c@test"}


def test_a_node_whose_launcher_cannot_start_stops_the_attempt_then_fails_with_its_reason(
    tmp_path: Path,
) -> None:
    """Node 1 joins the gang but its launcher cannot start (its log's name is taken by a folder):
    it says so and leaves; node 0 stops its own ranks at once, not after the rendezvous timeout.
    That is not the job's own failure: the job goes back in line, and after
    CHILDTUNE_MAX_ATTEMPTS it fails naming the node and what it reported."""
    with fault_stack(tmp_path, first_worker=False) as stack:
        extra = {"CHILDTUNE_RENDEZVOUS_TIMEOUT_S": "600", "CHILDTUNE_MAX_ATTEMPTS": "2"}
        add_node(stack, "node-a", **extra)
        add_node(stack, "node-b", **extra)
        client = stack.client
        job_id = client.submit(spec(stack.model, 4, nodes=2, ranks=2))["id"]
        (stack.job_dir(job_id) / "launcher.node1.log").mkdir(parents=True)
        sent = time.monotonic()
        job = wait_final(stack, job_id)
        assert time.monotonic() - sent < 300  # two attempts, neither waited out the 600 s rendezvous
        assert job["status"] == "failed", (job, stack.logs(job_id))
        assert job["attempts"] == 2 and len(job["nodes"]) == 2
        assert job["error"].startswith("attempt 2 of 2 ended: node 1 (node-"), job["error"]
        assert "ended: not started:" in job["error"] and "launcher.node1.log" in job["error"], job["error"]
        events = client.all_records(job_id, "events")
        stopped = [e for e in events if e["type"] == "gang" and "stopped" in e["message"]]
        assert [e["attempt"] for e in stopped] == [1], stopped  # the first went back in line
        assert not rank_pids(stack.job_dir(job_id))
