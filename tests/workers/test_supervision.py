"""The pieces that keep jobs from getting stuck or losing records, against a real redis-server:
the Redis sink through an outage, replay from the job directory, the reaper, run leases, and the
store's transitions under concurrent callers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli.local_stack import RedisServer
from service.core.jobdir import EVENTS_FILE, METRICS_FILE, number_events, read_jsonl
from service.core.records import JobRecord, new_job_id
from service.core.settings import Settings
from service.core.store import Store
from tests.e2e.stack import wait_for
from workers.reaper import Reaper
from workers.redis_sink import RedisSink, replay
from workers.tasks import LEASE_CONFIRM_S


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def new_job(store: Store) -> JobRecord:
    return store.create_job(JobRecord(id=new_job_id(), tenant="t", spec={}, resolved_spec={}, queue="cpu-x1"))


def stored(store: Store, job_id: str, which: str) -> list[dict[str, object]]:
    return store.read_stream(job_id, which, limit=100000).items


def test_the_sink_keeps_records_through_an_outage_and_stores_them_in_order(
    server: RedisServer, tmp_path: Path
) -> None:
    store = Store.from_url(server.url, timeout_s=1)
    job = new_job(store)
    sink = RedisSink(Store.from_url(server.url, timeout_s=1), job.id)
    for step in range(1, 6):
        sink.metric({"kind": "train", "step": step, "loss": 1.0 / step})
    sink.event({"type": "phase", "phase": "training", "seq": 1})
    wait_for(lambda: sink.pending == 0, 30, "the first records")
    port = server.port
    server.stop()  # the store goes away mid-job
    for step in range(6, 21):
        sink.metric({"kind": "train", "step": step, "loss": 1.0 / step})  # never raises, never blocks
    sink.event({"type": "phase", "phase": "saving", "seq": 2})
    sink.event({"type": "finished", "status": "succeeded", "seq": 3})
    time.sleep(0.5)
    assert sink.pending == 17  # kept, not dropped
    again = RedisServer(tmp_path / "redis", port=port)  # the same AOF
    again.start()
    try:
        sink.close(timeout=60)
        assert sink.pending == 0
        steps = [r["step"] for r in stored(store, job.id, "metrics")]
        assert steps == list(range(1, 21))
        assert [e["seq"] for e in stored(store, job.id, "events")] == [1, 2, 3]
        record = store.get_job(job.id)
        assert record is not None and record.phase == "saving" and record.step == 20
    finally:
        again.stop()


def test_a_long_outage_drops_the_queue_and_replays_the_job_directory(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_QUEUED records held in memory, the sink lets them go and, once the store is back,
    replays the job directory (which rank 0 writes first): every record once, in order."""
    monkeypatch.setattr(RedisSink, "MAX_QUEUED", 10)
    store = Store.from_url(server.url, timeout_s=1)
    job = new_job(store)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    sink = RedisSink(Store.from_url(server.url, timeout_s=1), job.id, job_dir)

    def record(step: int) -> None:  # as the Recorder does: the file first, then the sinks
        line = {"kind": "train", "step": step, "loss": 0.5}
        with (job_dir / METRICS_FILE).open("a") as f:
            f.write(json.dumps(line) + "\n")
        sink.metric(line)

    record(1)
    wait_for(lambda: sink.pending == 0, 30, "the first record")
    port = server.port
    server.stop()
    for step in range(2, 38):
        record(step)
    assert sink.pending <= 10  # bounded while the store is away
    again = RedisServer(tmp_path / "redis", port=port)
    again.start()
    try:
        record(38)
        sink.close(timeout=60)
        assert [r["step"] for r in stored(store, job.id, "metrics")] == list(range(1, 39))
    finally:
        again.stop()


def test_replay_fills_what_the_streams_lack_once(server: RedisServer, tmp_path: Path) -> None:
    store = Store.from_url(server.url)
    job = new_job(store)
    with (tmp_path / METRICS_FILE).open("w") as f:
        for step in range(1, 11):
            f.write(json.dumps({"kind": "train", "step": step, "loss": 0.1}) + "\n")
        f.write(json.dumps({"kind": "eval", "step": 10, "eval_accuracy": 0.5, "is_best": True}) + "\n")
        f.write('{"kind": "train", "st')  # torn by a kill
    with (tmp_path / EVENTS_FILE).open("w") as f:  # an older file: events without seq
        for phase in ("preparing", "training", "saving"):
            f.write(json.dumps({"type": "phase", "phase": phase}) + "\n")
    for step in range(1, 5):  # the sink got this far before it was cut off
        store.append_metric(job.id, {"kind": "train", "step": step})
    assert replay(store, job.id, tmp_path) == 6 + 1 + 3
    assert replay(store, job.id, tmp_path) == 0  # idempotent
    assert [r["step"] for r in stored(store, job.id, "metrics")] == [*range(1, 11), 10]
    assert [e["seq"] for e in stored(store, job.id, "events")] == [1, 2, 3]
    record = store.get_job(job.id)
    assert record is not None and record.phase == "saving" and record.best_eval is not None
    assert number_events(read_jsonl(tmp_path / EVENTS_FILE))[-1]["seq"] == 3


def settings(tmp_path: Path, url: str, **over: object) -> Settings:
    return Settings(
        redis_url=url,
        artifacts=tmp_path / "artifacts",
        heartbeat_interval_s=0.1,
        heartbeat_ttl_s=1.0,
        max_attempts=2,
        **over,  # type: ignore[arg-type]
    )


def running(store: Store, instance: str, attempts: int = 1, started: float | None = None) -> JobRecord:
    job = new_job(store)
    for _ in range(attempts):
        assert store.transition(job.id, None, incr_attempts=True).ok
    assert store.transition(
        job.id,
        "running",
        allowed=("queued",),
        run_id="run-1",
        worker="w@test",
        worker_instance=instance,
        started_at=started if started is not None else time.time() - 60,
    ).ok
    got = store.get_job(job.id)
    assert got is not None
    return got


def test_the_reaper_requeues_then_fails_the_jobs_of_a_silent_worker(
    server: RedisServer, tmp_path: Path
) -> None:
    store = Store.from_url(server.url)
    cfg = settings(tmp_path, server.url)
    sent: list[tuple[str, str]] = []
    reaper = Reaper(store, cfg, lambda job_id, queue: sent.append((job_id, queue)))
    store.heartbeat("alive", "alive@test", ["cpu-x1"], cfg.heartbeat_ttl_s)
    healthy = running(store, "alive")
    store.renew_lease(healthy.id, "run-1", 60)
    fresh = running(store, "gone", started=time.time())  # just claimed: left alone for now
    once = running(store, "gone", attempts=1)
    twice = running(store, "gone", attempts=2)
    done = dict(reaper())
    assert done == {once.id: "queued", twice.id: "failed"}
    assert sent == [(once.id, "cpu-x1")]
    requeued, failed = store.get_job(once.id), store.get_job(twice.id)
    assert requeued is not None and requeued.run_id is None and requeued.worker is None
    assert failed is not None and "stopped responding, 2 attempt(s) out of 2" in str(failed.error)
    assert store.get_job(healthy.id).status == "running"  # type: ignore[union-attr]
    assert store.get_job(fresh.id).status == "running"  # type: ignore[union-attr]
    time.sleep(0.2)
    assert reaper() == []  # nothing more to do (the lock lapsed: this is a real second pass)


def test_the_reaper_settles_a_job_whose_task_died_from_its_directory(
    server: RedisServer, tmp_path: Path
) -> None:
    store = Store.from_url(server.url)
    cfg = settings(tmp_path, server.url)
    store.heartbeat("alive", "alive@test", ["cpu-x1"], 60)  # the worker beats on
    finished = running(store, "alive")
    job_dir = cfg.jobs_dir / finished.id
    job_dir.mkdir(parents=True)
    (job_dir / "status.json").write_text(json.dumps({"status": "succeeded", "updated": time.time()}))
    (job_dir / METRICS_FILE).write_text(json.dumps({"kind": "train", "step": 1, "total_steps": 1}) + "\n")
    (job_dir / EVENTS_FILE).write_text(
        json.dumps({"type": "finished", "status": "succeeded", "seq": 1}) + "\n"
    )
    interrupted = running(store, "alive")
    sent: list[tuple[str, str]] = []
    reaper = Reaper(store, cfg, lambda job_id, queue: sent.append((job_id, queue)))
    assert reaper() == []  # the lease is seen absent once: not yet (a store outage looks the same)
    store.renew_lease(interrupted.id, "run-1", 60)  # ... and a live task renews it
    deadline = time.monotonic() + LEASE_CONFIRM_S + 1
    done: dict[str, str] = {}
    while time.monotonic() < deadline:
        time.sleep(0.2)
        store.heartbeat("alive", "alive@test", ["cpu-x1"], 60)
        done.update(reaper())
    assert done == {finished.id: "succeeded"}
    record = store.get_job(finished.id)
    assert record is not None and record.error is None and record.finished_at is not None
    assert [r["step"] for r in stored(store, finished.id, "metrics")] == [1]
    assert store.get_job(interrupted.id).status == "running"  # type: ignore[union-attr]
    assert sent == []


def _claim(url: str, job_id: str, run_id: str, barrier: threading.Barrier, results: list[bool]) -> None:
    own = Store.from_url(url)
    barrier.wait()
    results.append(own.transition(job_id, "running", allowed=("queued",), run_id=run_id).ok)


def test_one_transition_wins_among_concurrent_callers(server: RedisServer) -> None:
    store = Store.from_url(server.url)
    for _ in range(5):
        job = new_job(store)
        results: list[bool] = []
        barrier = threading.Barrier(8)
        threads = [
            threading.Thread(target=_claim, args=(server.url, job.id, f"run-{n}", barrier, results))
            for n in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 7 + [True]
        record = store.get_job(job.id)
        assert record is not None and record.status == "running"
        assert store.jobs_with_status("running").count(job.id) == 1
        assert job.id not in store.jobs_with_status("queued")
        # A requeue of another run than the current one is refused.
        assert not store.requeue(job.id, "run-999").ok
        assert store.requeue(job.id, record.run_id).ok


def test_the_api_reads_serve_200_concurrent_callers_and_back_off_when_redis_is_gone(
    server: RedisServer, tmp_path: Path
) -> None:
    """The API's polled reads run on its event loop: 200 concurrent callers all get their answer,
    and once Redis is gone a read fails at once for a back-off period instead of stalling the
    loop for a timeout each."""
    import asyncio

    import redis

    from service.core.store import LoopReads

    store = Store.from_url(server.url)
    job = new_job(store)
    for step in range(1, 4):
        store.append_metric(job.id, {"kind": "train", "step": step})
    reads = LoopReads.from_url(server.url)

    async def client() -> int:
        seen = 0
        for _ in range(5):
            assert await reads.owns("t", job.id)
            seen = len((await reads.read_stream(job.id, "metrics")).items)
        return seen

    async def poll_all() -> list[int]:
        return await asyncio.gather(*(client() for _ in range(200)))

    assert asyncio.run(poll_all()) == [3] * 200
    server.stop()
    with pytest.raises(redis.ConnectionError):
        asyncio.run(reads.get_job(job.id))
    started = time.monotonic()
    for _ in range(20):
        with pytest.raises(redis.ConnectionError, match="not retried yet"):
            asyncio.run(reads.get_job(job.id))
    assert time.monotonic() - started < LoopReads.BACKOFF_S  # no connection attempt among them


def test_stop_group_kills_a_group_that_ignores_term_without_waiting_on_its_zombie() -> None:
    """A leader and a child that both ignore TERM: after the grace, one KILL ends them and the
    leader is reaped at once (its zombie used to keep the group "alive" for 10 more seconds)."""
    import subprocess

    from service.core.procs import group_alive, stop_group

    proc = subprocess.Popen(
        ["sh", "-c", 'trap "" TERM; echo ready; sleep 300 & wait'],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # the trap is set
    killed: list[bool] = []
    started = time.monotonic()
    code = stop_group(proc, 0.5, on_kill=lambda: killed.append(True))
    took = time.monotonic() - started
    assert code == -9 and killed == [True]
    assert not group_alive(proc.pid)
    assert took < 8, f"stop_group took {took:.1f} s"  # grace 0.5 s; the zombie wait added 10 s
    proc.stdout.close()


def test_the_store_keeps_a_step_0_record_once(server: RedisServer) -> None:
    """An ``eval_at_start`` evaluation is at step 0: stored (and its job fields set), then
    dropped when replayed, like any step already stored."""
    store = Store.from_url(server.url)
    job = new_job(store)
    before = {"kind": "eval", "step": 0, "eval_accuracy": 0.5, "at_start": True, "is_best": False}
    assert store.append_metric(job.id, before, latest_eval=before)
    assert not store.append_metric(job.id, before, latest_eval=before)
    assert store.append_metric(job.id, {"kind": "train", "step": 1, "loss": 0.7})
    assert not store.append_metric(job.id, {"kind": "train", "step": 0, "loss": 0.7})
    assert [(r["kind"], r["step"]) for r in stored(store, job.id, "metrics")] == [("eval", 0), ("train", 1)]
    record = store.get_job(job.id)
    assert record is not None and record.latest_eval == before and record.best_eval is None


def test_rendezvous_ports_avoid_the_ephemeral_range_and_each_other() -> None:
    import socket

    from service.core.procs import RENDEZVOUS_LOW, ephemeral_ports, free_port, rendezvous_port

    low, high = ephemeral_ports()
    assert free_port() >= low  # what bind(0) hands out: the range a rendezvous port must avoid
    ports = [rendezvous_port() for _ in range(200)]
    assert all(RENDEZVOUS_LOW <= p < low or high < p <= 65535 for p in ports)
    assert len(set(ports)) > 150  # 12 jobs launched at once rarely meet (drawn, not handed out)
    with socket.socket() as s:  # free on every address, as rank 0's store binds it
        s.bind(("", ports[0]))
