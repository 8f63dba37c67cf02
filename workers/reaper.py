"""The reaper: jobs marked ``running`` whose worker stopped sending heartbeats.

A worker killed outright (SIGKILL, a lost machine) leaves its job ``running`` and its message
unacknowledged until the broker's visibility timeout, which is longer than any job. The reaper
runs in every worker's heartbeat thread (one at a time, under a lock in the store): a running
job whose worker instance has been silent for ``heartbeat_ttl_s`` goes back to ``queued`` with
a fresh message, or to ``failed`` once it has been started ``max_attempts`` times. When the old
message comes back later, the task finds the job no longer ``queued`` and drops it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from service.settings import Settings
from service.store import Store

__all__ = ["reap"]

log = logging.getLogger(__name__)


def reap(store: Store, settings: Settings, enqueue: Callable[[str, str], None]) -> list[tuple[str, str]]:
    """Requeue or fail the running jobs of vanished workers; returns (job id, new status) pairs."""
    if not store.try_lock("reaper", settings.heartbeat_interval_s):
        return []
    done: list[tuple[str, str]] = []
    for job_id in store.jobs_with_status("running"):
        record = store.get_job(job_id)
        if record is None or record.status != "running" or record.worker_instance is None:
            continue
        if record.started_at is not None and time.time() - record.started_at < settings.heartbeat_ttl_s:
            continue
        if store.worker_alive(record.worker_instance, settings.heartbeat_ttl_s):
            continue
        if record.attempts >= settings.max_attempts:
            error = (
                f"the worker running this job ({record.worker}) stopped responding, "
                f"{record.attempts} attempt(s) out of {settings.max_attempts}"
            )
            moved = store.transition(
                job_id,
                "failed",
                allowed=("running",),
                expect_run=record.run_id,
                error=error,
                finished_at=time.time(),
            )
            new_status = "failed"
        else:
            moved = store.transition(
                job_id,
                "queued",
                allowed=("running",),
                expect_run=record.run_id,
                worker=None,
                worker_instance=None,
                run_id=None,
            )
            new_status = "queued"
            if moved.ok:
                enqueue(job_id, record.queue)
        if moved.ok:
            log.warning("reaper: job %s of vanished worker %s -> %s", job_id, record.worker, new_status)
            done.append((job_id, new_status))
    return done
