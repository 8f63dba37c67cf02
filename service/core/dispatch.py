"""Sending an experiment's jobs to the queues, at most ``max_parallel`` at a time.

An experiment's jobs are created together, ``queued`` with phase ``waiting`` and no message: a
waiting job holds no worker and no place in a queue. :func:`advance` gives free slots to the
next waiting jobs in grid order (:meth:`Store.claim_slots`, one atomic step, so two callers
never exceed ``max_parallel``) and sends their messages; from then on each is an ordinary job.

Who calls it: the API once the experiment is created and when one of its jobs is cancelled; the
task that finishes one of its jobs; and every worker's heartbeat through :func:`sweep`, which
also re-sends a message that a caller died before sending (a job ``dispatching`` for longer
than :data:`DISPATCH_GRACE_S`; a duplicate message is harmless: the first claim wins and the
rest are dropped) and closes experiments whose jobs have all finished. So a restart of any
process, or of Redis with its AOF, leaves an experiment where it was.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery

from service.core.contract.vocabulary import FINAL_STATUSES
from service.core.queue import EnqueueError, enqueue
from service.core.records import DISPATCHING, gang_waiting_phase
from service.core.store import Store

__all__ = ["DISPATCH_GRACE_S", "advance", "send_job", "sweep"]

log = logging.getLogger(__name__)

DISPATCH_GRACE_S = 30.0


def send_job(store: Store, app: Celery, job_id: str, queue: str) -> str | None:
    """Put a queued job where a worker takes it: a one-machine job's message on its queue; a
    job of several machines in its queue's line of gangs (``workers.gang``), at the place it had
    if it was there before. Returns the job's phase from now on (None: an ordinary queued job).
    Raises :class:`EnqueueError` when the broker is down."""
    record = store.get_job(job_id)
    nodes = int(((record.resolved_spec if record else {}).get("resources") or {}).get("nodes") or 1)
    if nodes <= 1:
        enqueue(app, job_id, queue)
        return None
    gang = store.gang(job_id)
    if "size" in gang:  # an attempt whose node 0 died: its workers are free, its place kept
        store.release_gang(job_id, int(gang["attempt"]), queue, requeue=True)
    store.wait_for_gang(job_id, queue, nodes)
    phase = gang_waiting_phase(nodes)
    store.transition(job_id, None, allowed=("queued",), phase=phase)
    return phase


def _max_parallel(spec: dict[str, Any]) -> int:
    return int(spec.get("max_parallel") or 1)


def advance(store: Store, app: Celery, exp_id: str) -> list[str]:
    """Send the experiment's next waiting jobs to their queues while it has free slots; close it
    once every job has finished. Returns the ids sent."""
    experiment = store.get_experiment(exp_id)
    if experiment is None:
        return []
    sent: list[str] = []
    if not experiment.cancel_requested:
        for job_id in store.claim_slots(exp_id, _max_parallel(experiment.spec)):
            record = store.get_job(job_id)
            if record is None:
                continue
            try:
                phase = send_job(store, app, job_id, record.queue)
            except EnqueueError as exc:  # left "dispatching": the sweep sends it later
                log.warning("experiment %s: job %s not sent yet: %s", exp_id, job_id, exc)
                continue
            store.dispatched(job_id, phase)
            sent.append(job_id)
    jobs = store.get_jobs(job["id"] for job in experiment.jobs)
    if all(job is None or job.status in FINAL_STATUSES for job in jobs):
        store.close_experiment(exp_id)
    return sent


def sweep(store: Store, app: Celery, *, grace_s: float = DISPATCH_GRACE_S) -> list[str]:
    """Every open experiment: re-send messages that were never sent, then :func:`advance`."""
    sent: list[str] = []
    now = time.time()
    for exp_id in store.open_experiments():
        active = store.active_jobs(exp_id)
        stale = [job_id for job_id, at in active.items() if now - at > grace_s]
        for record in store.get_jobs(stale):
            if record is None or record.status != "queued" or record.phase != DISPATCHING:
                continue
            try:
                phase = send_job(store, app, record.id, record.queue)
            except EnqueueError:
                continue
            log.warning("experiment %s: job %s was given a slot but not sent; sent now", exp_id, record.id)
            store.dispatched(record.id, phase)
            sent.append(record.id)
        sent += advance(store, app, exp_id)
    return sent
