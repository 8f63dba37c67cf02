"""The training program's sink that streams rank 0's records into the job store (Redis).

Named by the task in ``CHILDTUNE_SINKS=workers.redis_sink:factory``; the training program calls
``factory(job_dir, spec)`` once on rank 0 and then ``metric``/``event`` for every record of
``metrics.jsonl``/``events.jsonl``. Each metric record is stored once per (kind, step) and each
event once per ``seq``: records the store already holds are ignored. The job record follows
along: phase, step and total steps, latest train loss, latest and best evaluation.

The store may be unreachable for a while (a Redis restart, a network blip): the sink never
fails the job and never drops a record. Records go through a queue to a thread that stores
them in order, retrying with backoff while the store is away, so the training loop never waits
on Redis. When the sink starts it first replays the job directory's files, which fills any gap
an earlier run left (killed with records still queued). What is still queued at the end after
:data:`FLUSH_TIMEOUT_S` is left to :func:`replay`, which the worker's task runs before it
records the job's final status: the job directory is the source of truth the streams are
rebuilt from.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from service.core import env
from service.core.contract import JobSpec
from service.core.jobdir import EVENTS_FILE, METRICS_FILE, number_events, read_jsonl
from service.core.store import Store

__all__ = ["FLUSH_TIMEOUT_S", "RedisSink", "factory", "replay"]

# How long closing the sink waits for queued records to reach an unreachable store.
FLUSH_TIMEOUT_S = 10.0
RETRY_MAX_S = 2.0
log = logging.getLogger(__name__)


def _metric_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The job record's fields that a metric record updates."""
    fields: dict[str, Any] = {}
    if isinstance(record.get("step"), int):
        fields["step"] = record["step"]
    if isinstance(record.get("total_steps"), int):
        fields["total_steps"] = record["total_steps"]
    kind = record.get("kind")
    if kind == "train":
        fields["latest_train"] = record
    elif kind == "eval":
        fields["latest_eval"] = record
        if record.get("is_best"):
            fields["best_eval"] = record
        if record.get("is_final"):
            fields["final_eval"] = record
    return fields


def _event_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The job record's fields that an event updates."""
    kind = record.get("type")
    if kind == "phase" and isinstance(record.get("phase"), str):
        return {"phase": record["phase"]}
    if kind == "started" and isinstance(record.get("total_steps"), int):
        return {"total_steps": record["total_steps"]}
    return {}


def _store_one(store: Store, job_id: str, what: str, record: dict[str, Any]) -> bool:
    if what == "metric":
        return store.append_metric(job_id, record, **_metric_fields(record))
    return store.append_event(job_id, record, **_event_fields(record))


def replay(store: Store, job_id: str, job_dir: Path) -> int:
    """Store every record of the job directory's files the store lacks; returns how many.

    Idempotent (the store keeps each metric step and event ``seq`` once). Raises the store's
    errors: the caller retries.
    """
    added = 0
    for record in read_jsonl(Path(job_dir) / METRICS_FILE):
        added += _store_one(store, job_id, "metric", record)
    for record in number_events(read_jsonl(Path(job_dir) / EVENTS_FILE)):
        added += _store_one(store, job_id, "event", record)
    return added


class RedisSink:
    """Appends records to the job's streams and keeps the job record's progress current."""

    # Records held in memory while the store is away; past this (with a job directory to replay
    # from) the queue is dropped and the directory replayed once the store is back.
    MAX_QUEUED = 10_000

    def __init__(self, store: Store, job_id: str, job_dir: Path | None = None) -> None:
        self.store = store
        self.job_id = job_id
        self._job_dir = job_dir
        self._queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._replay_pending = job_dir is not None  # first catch up with what an earlier run left
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="childtune-redis-sink", daemon=True)
        self._thread.start()

    def metric(self, record: dict[str, Any]) -> None:
        self._put("metric", record)

    def event(self, record: dict[str, Any]) -> None:
        self._put("event", record)

    def _put(self, what: str, record: dict[str, Any]) -> None:
        with self._cond:
            if self._job_dir is not None and len(self._queue) >= self.MAX_QUEUED:
                # A long outage: stop holding records in memory; the job directory has them all,
                # and replaying it (in order, each record once) catches the streams up later.
                self._queue.clear()
                self._replay_pending = True
            self._queue.append((what, dict(record)))
            self._cond.notify()

    @property
    def pending(self) -> int:
        """Records not yet stored."""
        with self._cond:
            return len(self._queue)

    def _attempt(self, action: Callable[[], object]) -> bool:
        """Run ``action`` against the store; on failure wait (backoff) and say so."""
        try:
            action()
        except (redis.RedisError, OSError) as exc:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                log.warning(
                    "job %s: the store is unreachable (%s); records are kept and retried", self.job_id, exc
                )
            delay = min(RETRY_MAX_S, 0.1 * 2 ** min(10, int((now - self._failing_since) / 0.5)))
            with self._cond:
                self._cond.wait(delay)
            return False
        if self._failing_since is not None:
            log.warning(
                "job %s: the store is back after %.1f s", self.job_id, time.monotonic() - self._failing_since
            )
            self._failing_since = None
        return True

    def _run(self) -> None:
        while True:
            if self._replay_pending and self._job_dir is not None:
                # The files hold every record sent so far (rank 0 writes them first).
                if not self._attempt(functools.partial(replay, self.store, self.job_id, self._job_dir)):
                    continue  # (closing too: close() bounds the wait, the worker replays the rest)
                self._replay_pending = False
            with self._cond:
                while not self._queue and not self._closing and not self._replay_pending:
                    self._cond.wait()
                if self._replay_pending:
                    continue
                if not self._queue:
                    return
                item = self._queue[0]
            if self._attempt(functools.partial(_store_one, self.store, self.job_id, *item)):
                with self._cond:
                    if self._queue and self._queue[0] is item:  # (not cleared for a replay meanwhile)
                        self._queue.popleft()

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Store what is queued (waiting at most ``timeout`` s for an unreachable store)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        left = self.pending
        if left or self._thread.is_alive():
            log.warning(
                "job %s: %d record(s) not stored yet; the worker replays them from the job directory",
                self.job_id,
                left,
            )
        self.store.r.close()


def factory(job_dir: Path, spec: JobSpec) -> RedisSink | None:
    """The sink of the job in ``job_dir`` (its name is the job id); None without a Redis URL."""
    url = os.environ.get(env.REDIS_URL)
    if not url:
        log.warning("%s is not set: no Redis sink for %s", env.REDIS_URL, job_dir)
        return None
    return RedisSink(Store.from_url(url), Path(job_dir).name, Path(job_dir))
