"""The job queue: the Celery application, the task names, ``enqueue`` and ``send_node``.

Defined on the producer side: the API sends ``run_job`` messages by name from here, and the
workers (``workers.tasks``, ``workers.worker``) import the same app to consume them. It imports
neither torch nor the task's code. Job state lives in the store (:mod:`service.core.store`), never in
Celery results, so there is no result backend.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from service.core.settings import ALL_QUEUES, Settings

__all__ = ["RUN_JOB", "RUN_NODE", "EnqueueError", "enqueue", "make_celery", "node_queue", "send_node"]

RUN_JOB = "workers.tasks.run_job"
# A multi-node job's part on one reserved worker: ``run_node(job_id, attempt, node)``, sent to
# that worker's own queue (:func:`node_queue`), never to a shared one.
RUN_NODE = "workers.gang.run_node"


class EnqueueError(RuntimeError):
    """The broker did not take the message (Redis unreachable)."""


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``: late acks, one job at a time, requeue on a lost worker."""
    app = Celery("childtune", broker=settings.redis_url, set_as_current=True)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        # A message is redelivered when unacknowledged for this long: longer than the longest job.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=ALL_QUEUES[0],
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="prefork",
        worker_max_tasks_per_child=1,
        # With REMAP_SIGTERM=SIGQUIT, SIGTERM starts a cold shutdown that first waits this long
        # for the running job; the task stops its launcher and the message goes back to the queue.
        worker_soft_shutdown_timeout=settings.soft_shutdown_s,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def enqueue(app: Celery, job_id: str, queue: str) -> None:
    """Send ``run_job(job_id)`` to ``queue``; raises :class:`EnqueueError` when the broker is down."""
    policy: dict[str, Any] = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
    try:
        app.send_task(RUN_JOB, args=[job_id], queue=queue, retry=True, retry_policy=policy)
    except (OperationalError, OSError) as exc:
        raise EnqueueError(f"the broker did not accept the job: {exc}") from exc


def node_queue(instance: str) -> str:
    """The queue only the worker ``instance`` consumes: where its gang nodes are sent."""
    return f"node.{instance}"


def send_node(app: Celery, instance: str, job_id: str, attempt: int, node: int) -> None:
    """Send node ``node`` of attempt ``attempt`` of ``job_id`` to the reserved worker ``instance``."""
    try:
        app.send_task(RUN_NODE, args=[job_id, attempt, node], queue=node_queue(instance), retry=True)
    except (OperationalError, OSError) as exc:
        raise EnqueueError(f"the broker did not accept the node's message: {exc}") from exc
