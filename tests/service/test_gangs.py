"""Gang reservations on a real redis-server: a job of N machines gets N idle workers at once or
none, in order, and a worker is never both reserved for a gang and running its own job."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.records import JobRecord
from service.core.store import Store
from service.core.store.gangs import GangAssignment, Reservation
from tests.e2e.stack import RedisServer

Q = "cpu"
TTL = {"idle_ttl_s": 60.0, "reserve_ttl_s": 60.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(Path(tmp_path_factory.mktemp("gangs")) / "redis")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def store(server: RedisServer) -> Store:
    s = Store.from_url(server.url)
    s.r.flushdb()
    return s


def job(store: Store, job_id: str, nodes: int) -> str:
    store.create_job(JobRecord(id=job_id, tenant="t", spec={}, resolved_spec={}, queue=Q))
    store.wait_for_gang(job_id, Q, nodes)
    return job_id


def idle(store: Store, *instances: str) -> None:
    for name in instances:
        store.heartbeat(name, f"host-{name}", [Q], ttl_s=60)
        assert store.worker_idle(name, [Q], busy_ttl_s=60) is None


def test_a_gang_gets_all_its_nodes_at_once_or_none(store: Store) -> None:
    job(store, "j1", 2)
    job(store, "j2", 2)
    idle(store, "w1")
    assert store.assign_gang(Q, **TTL) is None  # one idle worker: j1 holds nothing
    assert store.reservation("w1") is None and store.idle_workers(Q, 60) == ["w1"]
    idle(store, "w2", "w3")
    first = store.assign_gang(Q, **TTL)
    assert first is not None and first.job_id == "j1" and first.attempt == 1
    assert first.nodes == ["w1", "w2"]
    assert store.reservation("w2") == Reservation("j1", 1, 1)
    assert store.idle_workers(Q, 60) == ["w3"]
    assert store.assign_gang(Q, **TTL) is None  # j2 needs 2, one is idle: it holds none of them
    assert store.reservation("w3") is None and store.waiting_gangs(Q) == ["j2"]
    # a reserved worker stays reserved when it beats again, and is told what for
    assert store.worker_idle("w1", [Q], busy_ttl_s=60) == Reservation("j1", 1, 0)
    assert store.idle_workers(Q, 60) == ["w3"]


def test_nodes_join_and_a_gang_that_does_not_form_waits_again_at_its_place(store: Store) -> None:
    job(store, "j1", 2)
    job(store, "j2", 1)
    idle(store, "w1", "w2")
    gang = store.assign_gang(Q, **TTL)
    assert gang is not None and gang.job_id == "j1"
    assert store.join_gang(Reservation("j1", 1, 0), "w1") == (1, 2)
    assert store.set_gang_fields("j1", 1, endpoint="127.0.0.1:1", run="r1")
    assert not store.set_gang_fields("j1", 2, run="r2")  # not the current attempt
    assert store.join_gang(Reservation("j1", 1, 0), "w1") is None  # consumed: a second start refused
    assert store.gangs_forming_since(float("inf")) == ["j1"]
    # node 1 never starts: the gang is released, w2 is free, j1 waits ahead of j2 again
    assert store.release_gang("j1", 1, Q, requeue=True)
    assert store.reservation("w2") is None and store.gangs_forming_since(float("inf")) == []
    assert store.waiting_gangs(Q) == ["j1", "j2"]
    assert store.join_gang(Reservation("j1", 1, 1), "w2") is None  # too late: released
    assert not store.release_gang("j1", 1, Q, requeue=True)  # twice: nothing more
    assert not store.set_gang_fields("j1", 1, run="late")  # a released attempt takes no more fields
    store.worker_free("w1", "j1")  # (w1 joined: it is busy until its node's task ends)
    idle(store, "w1", "w2")
    again = store.assign_gang(Q, **TTL)
    assert again is not None and again.job_id == "j1" and again.attempt == 2
    gang = store.gang("j1")  # nothing the nodes of attempt 1 told each other is left
    assert "endpoint" not in gang and "run" not in gang
    assert store.join_gang(Reservation("j1", 2, 0), again.nodes[0]) == (1, 2)
    assert store.join_gang(Reservation("j1", 2, 1), again.nodes[1]) == (2, 2)
    assert store.gangs_forming_since(float("inf")) == []
    assert not store.release_gang("j1", 1, Q, requeue=True)  # a stale attempt cannot undo attempt 2


def test_a_cancelled_job_leaves_the_line_and_stale_idle_beats_do_not_count(store: Store) -> None:
    job(store, "j1", 1)
    job(store, "j2", 1)
    assert store.request_cancel("j1").ok
    store.r.zadd("ct:idle:" + Q, {"ghost": 1.0})  # a worker that stopped beating long ago
    assert store.assign_gang(Q, **TTL) is None
    assert store.waiting_gangs(Q) == ["j2"]
    idle(store, "w1")
    gang = store.assign_gang(Q, **TTL)
    assert gang is not None and gang.job_id == "j2" and gang.nodes == ["w1"]


def test_a_worker_is_either_reserved_or_running_its_own_job_never_both(
    store: Store, server: RedisServer
) -> None:
    """Workers flip between idle and busy while gangs are assigned from several threads: every
    worker that a gang got had not gone busy in between, and no worker is in two gangs."""
    workers = [f"w{i}" for i in range(6)]
    for i in range(12):
        job(store, f"j{i:02}", 1 + i % 3)
    idle(store, *workers)
    busy: dict[str, int] = {w: 0 for w in workers}  # a worker's own jobs run under a reservation: bad
    violations: list[str] = []
    stop = threading.Event()

    def worker_loop(name: str) -> None:
        local = Store.from_url(server.url)
        while not stop.is_set():
            if local.worker_busy(name, [Q], "own-job") is None:
                busy[name] += 1  # running its own job: no gang may hold it now
                if local.reservation(name) is not None:
                    violations.append(f"{name} reserved while running its own job")
                local.worker_free(name, "own-job")
                local.worker_idle(name, [Q], busy_ttl_s=60)
            else:
                stop.wait(0.001)

    def assigner() -> None:
        local = Store.from_url(server.url)
        while not stop.is_set():
            if local.assign_gang(Q, **TTL) is None:
                stop.wait(0.001)

    threads = [threading.Thread(target=worker_loop, args=(w,)) for w in workers]
    threads += [threading.Thread(target=assigner) for _ in range(3)]
    for t in threads:
        t.start()
    stop.wait(3.0)  # let them race for a while (the test's outcome does not depend on how long)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert violations == []
    held: dict[str, str] = {}
    for name in workers:
        r = store.reservation(name)
        if r is not None:
            assert name not in held
            held[name] = r.job_id
            gang = store.gang(r.job_id)
            assert gang[f"node:{r.node}"] == name and int(gang["attempt"]) == r.attempt
    # every assigned gang has all of its nodes reserved (none half-held)
    for job_id in set(held.values()):
        gang = store.gang(job_id)
        assert sum(1 for k in gang if k.startswith("node:")) == int(gang["size"])
        assert sorted(n for n, j in held.items() if j == job_id) == sorted(
            v for k, v in gang.items() if k.startswith("node:")
        )
    assert sum(busy.values()) > 0 and held, (busy, held)


def test_a_busy_worker_is_not_offered_to_gangs_until_its_job_ends_or_its_task_goes_silent(
    store: Store,
) -> None:
    job(store, "j1", 1)
    store.heartbeat("w1", "host-w1", [Q], ttl_s=60)
    assert store.worker_busy("w1", [Q], "own-job") is None
    assert store.worker_idle("w1", [Q], busy_ttl_s=60) is None
    assert store.idle_workers(Q, ttl_s=60) == []  # running its own job: not idle
    assert store.assign_gang(Q, **TTL) is None
    store.worker_free("w1", "own-job")
    store.worker_idle("w1", [Q], busy_ttl_s=60)
    assert store.idle_workers(Q, ttl_s=60) == ["w1"]
    # A task that died without freeing its job: once its renewal is older than the TTL, the
    # worker is idle again.
    store.worker_busy("w1", [Q], "dead-task")
    store.worker_idle("w1", [Q], busy_ttl_s=60)
    assert store.idle_workers(Q, ttl_s=60) == []
    store.worker_idle("w1", [Q], busy_ttl_s=-1)  # (every renewal is older than that)
    assert store.idle_workers(Q, ttl_s=60) == ["w1"]
    assert store.assign_gang(Q, **TTL) == GangAssignment("j1", 1, ["w1"])
