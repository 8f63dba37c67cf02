"""Jobs: submit one (validate, resolve against the tenant, store, enqueue) and cancel one."""

from __future__ import annotations

from typing import Any

from celery import Celery

from service.core.contract import JobSpec, load_spec
from service.core.contract.vocabulary import FINAL_STATUSES
from service.core.dispatch import advance, send_job
from service.core.queue import EnqueueError
from service.core.records import JobRecord, new_job_id, valid_job_id
from service.core.resolve import resolve_spec
from service.core.settings import Settings, queue_for
from service.core.store import Store
from service.core.usecases.errors import Conflict, Invalid, NotFound, Unavailable
from service.core.usecases.text import NOT_UNICODE, not_unicode

__all__ = ["cancel_job", "new_job_record", "owned_job", "submit_job"]


def owned_job(store: Store, job_id: str, tenant: str) -> JobRecord:
    """The tenant's job, else :class:`NotFound` (another tenant's id looks like a missing one)."""
    record = store.get_job(job_id, tenant) if valid_job_id(job_id) else None
    if record is None:
        raise NotFound("job", job_id)
    return record


def new_job_record(tenant: str, spec: JobSpec, resolved: JobSpec) -> JobRecord:
    """A new job of ``tenant`` (not stored yet): its spec as asked, as resolved, and its queue."""
    return JobRecord(
        id=new_job_id(),
        tenant=tenant,
        spec=spec.model_dump(mode="json"),
        resolved_spec=resolved.model_dump(mode="json"),
        queue=queue_for(spec.resources.device, spec.resources.ranks_per_node),
    )


def submit_job(body: Any, tenant: str, store: Store, settings: Settings, celery: Celery) -> JobRecord:
    """Validate the spec strictly (the job contract), resolve its model and files for the
    tenant, store it ``queued`` and send it to its queue. A broker that cannot take the message
    leaves nothing behind (the record is deleted) and raises :class:`Unavailable`."""
    where = not_unicode(body)
    if where is not None:
        raise Invalid("invalid_spec", [(where, NOT_UNICODE)])
    spec = load_spec(body, strict=True)  # SpecError: the API answers 422 naming the field
    resolved = resolve_spec(spec, tenant, store, settings)
    record = store.create_job(new_job_record(tenant, spec, resolved))
    try:
        phase = send_job(store, celery, record.id, record.queue)
    except EnqueueError as exc:
        store.delete_job(record.id)
        raise Unavailable(str(exc), code="broker_unavailable") from exc
    return record if phase is None else record.model_copy(update={"phase": phase})


def cancel_job(store: Store, celery: Celery, job_id: str, tenant: str) -> JobRecord:
    """A queued job is cancelled at once; a running one is flagged and its worker stops its ranks
    within seconds. A finished job is a :class:`Conflict`. Returns the job as it is now."""
    record = owned_job(store, job_id, tenant)
    outcome = store.request_cancel(job_id)
    if not outcome.ok and outcome.previous in FINAL_STATUSES:
        raise Conflict(f"job {job_id} already {outcome.previous}; nothing to cancel", code="job_finished")
    if record.experiment_id is not None:  # a queued job of an experiment frees its slot now
        advance(store, celery, record.experiment_id)
    return owned_job(store, job_id, tenant)
