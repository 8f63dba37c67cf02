"""``/v1/jobs``: create, list, get, cancel; metrics and events by cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from service.api.deps import CeleryDep, ReadsDep, SettingsDep, StoreDep, TenantDep
from service.api.errors import ApiError, error_responses
from service.api.schemas import JobList, JobPublic, RecordPage
from service.core.contract import JobSpec
from service.core.contract.vocabulary import Status
from service.core.records import valid_cursor, valid_job_id
from service.core.store import LoopReads
from service.core.usecases.jobs import cancel_job as cancel_job_case
from service.core.usecases.jobs import submit_job

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
    return JobPublic.of(submit_job(body, tenant, store, settings, celery))


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
    return JobPublic.of(cancel_job_case(store, celery, job_id, tenant))


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
