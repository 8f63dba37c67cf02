"""``/v1/jobs``: create, list, get, cancel; metrics and events by cursor."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query

from service.api.deps import CeleryDep, ReadsDep, SettingsDep, StoreDep, TenantDep
from service.api.errors import RETRY_AFTER_S, ApiError, error_responses, is_unicode
from service.api.schemas import JobList, JobPublic, RecordPage
from service.core.contract import JobSpec, SpecError, load_spec
from service.core.contract.vocabulary import FINAL_STATUSES
from service.core.dispatch import advance
from service.core.queue import EnqueueError, enqueue
from service.core.records import JobRecord, new_job_id, valid_cursor, valid_job_id
from service.core.resolve import resolve_spec
from service.core.settings import queue_for
from service.core.store import LoopReads, Store

__all__ = ["router"]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 503))

_EXAMPLE_SPECS: list[Any] = JobSpec.model_json_schema().get("examples", [])
_SPEC_EXAMPLES = {
    f"example{i + 1}": {"summary": summary, "value": value}
    for i, (summary, value) in enumerate(
        zip(
            ("ChildTuning-D on a GLUE preset, 2 ranks", "ChildTuning-F on uploaded files"),
            _EXAMPLE_SPECS,
            strict=False,
        )
    )
}

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def not_unicode(body: Any) -> str | None:
    """Where a JSON body holds a string that is not Unicode text, else None: JSON's ``\\ud800``
    escapes decode to lone surrogates, which no answer, log or ``job.json`` could encode.

    The answer is the dotted path of the value, or of the object whose key it is (the key itself
    cannot be shown). Iterative: a body may nest as deep as the JSON decoder allows.
    """
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not is_unicode(value):
                return path
        elif isinstance(value, dict):
            if not all(is_unicode(str(key)) for key in value):
                return path
            items = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
            stack.extend(reversed(items))  # in document order
        elif isinstance(value, list):
            items = [(f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value)]
            stack.extend(reversed(items))
    return None


def owned_job(store: Store, job_id: str, tenant: str) -> JobRecord:
    """The caller's job, else 404 (another tenant's id looks exactly like a missing one)."""
    record = store.get_job(job_id, tenant) if valid_job_id(job_id) else None
    if record is None:
        raise ApiError.not_found("job", job_id)
    return record


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    summary="Submit a fine-tune job",
    responses=error_responses(
        400,
        422,
        503,
        descriptions={
            422: "The spec is invalid; error.field names the first bad field.",
            503: "The job store (Redis) or the broker is unreachable; retry after Retry-After seconds.",
        },
    ),
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}}
    },
)
def create_job(
    body: Annotated[dict[str, Any], Body(openapi_examples=_SPEC_EXAMPLES)],
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> JobPublic:
    """Validate the spec (the job contract), resolve its model and files, store it and enqueue it."""
    where = not_unicode(body)
    if where is not None:
        message = "not valid Unicode text (a lone surrogate such as \\ud800)"
        raise ApiError(422, "invalid_spec", f"{where}: {message}" if where else message, where or None)
    spec = load_spec(body, strict=True)
    try:
        resolved = resolve_spec(spec, tenant, store, settings)
    except SpecError as exc:
        raise ApiError.from_spec_error(exc) from exc
    record = JobRecord(
        id=new_job_id(),
        tenant=tenant,
        spec=spec.model_dump(mode="json"),
        resolved_spec=resolved.model_dump(mode="json"),
        queue=queue_for(spec.resources.device, spec.resources.num_ranks),
    )
    record = store.create_job(record)
    try:
        enqueue(celery, record.id, record.queue)
    except EnqueueError as exc:
        store.delete_job(record.id)
        raise ApiError(
            503, "broker_unavailable", str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from exc
    return JobPublic.of(record)


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    tenant: TenantDep,
    store: StoreDep,
    status: Annotated[Status | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(pattern=r"^\d{1,20}$", description="next_cursor of the last page")
    ] = None,
) -> JobList:
    page = store.list_jobs(tenant, status=status, limit=limit, cursor=cursor)
    return JobList(data=[JobPublic.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="One job: status, phase, progress, metrics",
    responses=error_responses(404),
)
async def get_job(job_id: str, tenant: TenantDep, reads: ReadsDep) -> JobPublic:
    record = await reads.get_job(job_id, tenant) if valid_job_id(job_id) else None
    if record is None:
        raise ApiError.not_found("job", job_id)
    return JobPublic.of(record)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a queued or running job",
    responses=error_responses(
        404, 409, descriptions={409: "The job has finished already (code job_finished)."}
    ),
)
def cancel_job(job_id: str, tenant: TenantDep, store: StoreDep, celery: CeleryDep) -> JobPublic:
    """A queued job is cancelled at once; a running one within seconds (its ranks are stopped)."""
    record = owned_job(store, job_id, tenant)
    outcome = store.request_cancel(job_id)
    if not outcome.ok and outcome.previous in FINAL_STATUSES:
        raise ApiError(409, "job_finished", f"job {job_id} already {outcome.previous}; nothing to cancel")
    if record.experiment_id is not None:  # a queued job of an experiment frees its slot now
        advance(store, celery, record.experiment_id)
    return JobPublic.of(owned_job(store, job_id, tenant))


async def _records(
    reads: LoopReads, tenant: str, job_id: str, which: str, after: str, limit: int
) -> RecordPage:
    """A page of the caller's job's stream (polled by every client: async, two Redis reads)."""
    if not (valid_job_id(job_id) and await reads.owns(tenant, job_id)):
        raise ApiError.not_found("job", job_id)
    if not valid_cursor(after):
        raise ApiError(422, "invalid_request", "after: a cursor is 0 or a next_cursor value", "after")
    page = await reads.read_stream(job_id, which, after=after, limit=limit)
    assert page.next_cursor is not None
    return RecordPage(data=page.items, next_cursor=page.next_cursor)


@router.get(
    "/{job_id}/metrics",
    response_model=RecordPage,
    summary="Metric records after a cursor",
    responses=error_responses(404),
)
async def job_metrics(
    job_id: str,
    tenant: TenantDep,
    reads: ReadsDep,
    after: Annotated[str, Query(description="0 for the start, else the last next_cursor")] = "0",
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> RecordPage:
    """Train and eval records (``metrics.jsonl``), each once, in order; each has a ``cursor``."""
    return await _records(reads, tenant, job_id, "metrics", after, limit)


@router.get(
    "/{job_id}/events",
    response_model=RecordPage,
    summary="Event records after a cursor",
    responses=error_responses(404),
)
async def job_events(
    job_id: str,
    tenant: TenantDep,
    reads: ReadsDep,
    after: Annotated[str, Query(description="0 for the start, else the last next_cursor")] = "0",
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> RecordPage:
    """Phase changes, Fisher summary, checkpoints, resume, errors, finish (``events.jsonl``)."""
    return await _records(reads, tenant, job_id, "events", after, limit)
