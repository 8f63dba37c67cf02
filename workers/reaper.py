"""The reaper: ``running`` jobs that nothing supervises any more.

A job's supervisor is the task that runs its launcher. It can vanish in two ways:

- the whole worker dies (SIGKILL, a lost machine): its heartbeat stops, and its message stays
  unacknowledged until the broker's visibility timeout, longer than any job;
- the task process alone dies (the OOM killer): the worker beats on, but the task no longer
  renews the job's lease (``Store.renew_lease``). Celery usually redelivers the message at
  once and the next task takes the job over (``workers.tasks``); the reaper covers the rest.

The reaper runs in every worker's heartbeat thread (one pass at a time, under a lock in the
store). A running job whose worker has been silent for ``heartbeat_ttl_s``, or whose lease this
reaper has seen absent for :data:`LEASE_CONFIRM_S` (a live task renews it within half a second
of the store coming back from an outage), is settled from its job directory: a ``status.json``
that the run finished (``succeeded`` or ``failed``) is recorded as is, with the streams
completed from the directory's files; otherwise the job goes back to ``queued`` with a fresh
message, or to ``failed`` once it has been started ``max_attempts`` times. When an old message
comes back later, the task finds the job no longer claimable and drops it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from service.core.records import JobRecord
from service.core.settings import Settings
from service.core.store import Store
from workers.tasks import LEASE_CONFIRM_S

__all__ = ["Reaper"]

log = logging.getLogger(__name__)


class Reaper:
    """One worker's reaper; it remembers since when it has seen each job's lease absent."""

    def __init__(self, store: Store, settings: Settings, enqueue: Callable[[str, str], Any]) -> None:
        self.store, self.settings, self.enqueue = store, settings, enqueue
        self._absent_since: dict[str, tuple[str | None, float]] = {}

    def _lease_lost(self, record: JobRecord) -> bool:
        if self.store.lease_holder(record.id) is not None:
            self._absent_since.pop(record.id, None)
            return False
        now = time.monotonic()
        run, since = self._absent_since.get(record.id, (record.run_id, now))
        if run != record.run_id:
            since = now
        self._absent_since[record.id] = (record.run_id, since)
        return now - since >= LEASE_CONFIRM_S

    def __call__(self) -> list[tuple[str, str]]:
        """Settle the running jobs nothing supervises; returns (job id, new status) pairs."""
        if not self.store.try_lock("reaper", self.settings.heartbeat_interval_s):
            return []
        done: list[tuple[str, str]] = []
        running = self.store.jobs_with_status("running")
        for job_id in list(self._absent_since):
            if job_id not in running:
                del self._absent_since[job_id]
        ttl = self.settings.heartbeat_ttl_s
        for job_id in running:
            record = self.store.get_job(job_id)
            if record is None or record.status != "running" or record.worker_instance is None:
                continue
            lease_lost = self._lease_lost(record)
            if record.started_at is not None and time.time() - record.started_at < ttl:
                continue
            worker_lost = not self.store.worker_alive(record.worker_instance, ttl)
            if not (worker_lost or lease_lost):
                continue
            why = "stopped responding" if worker_lost else "lost its task process"
            new_status = self._settle(record, why)
            if new_status is not None:
                self._absent_since.pop(job_id, None)
                log.warning("reaper: job %s of %s (%s) -> %s", job_id, record.worker, why, new_status)
                done.append((job_id, new_status))
        return done

    def _settle(self, record: JobRecord, why: str) -> str | None:
        from service.core.jobdir import read_status
        from workers.redis_sink import replay

        job_dir = self.settings.jobs_dir / record.id
        status = read_status(job_dir)
        fresh = float(status.get("updated") or 0) >= (record.started_at or 0)
        final = status.get("status") if fresh else None
        if final in ("succeeded", "failed"):
            replay(self.store, record.id, job_dir)
            moved = self.store.finish_run(record.id, record.run_id, str(final), status.get("error"))
            return str(final) if moved.ok else None
        if record.attempts >= self.settings.max_attempts:
            error = (
                f"the worker running this job ({record.worker}) {why}, "
                f"{record.attempts} attempt(s) out of {self.settings.max_attempts}"
            )
            return "failed" if self.store.finish_run(record.id, record.run_id, "failed", error).ok else None
        if self.store.requeue(record.id, record.run_id).ok:
            self.enqueue(record.id, record.queue)
            return "queued"
        return None
