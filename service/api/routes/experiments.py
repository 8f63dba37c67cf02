"""``/v1/experiments``: a grid of jobs compared over seeds against a baseline."""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import FileResponse

from service.api.deps import CeleryDep, SettingsDep, StoreDep, TenantDep
from service.api.errors import ApiError, error_responses
from service.api.routes.jobs import not_unicode
from service.api.schemas import ExperimentCurves, ExperimentList, ExperimentPublic, PlotList
from service.core.contract import SpecError
from service.core.contract.vocabulary import FINAL_STATUSES
from service.core.dispatch import advance
from service.core.experiments import (
    ExperimentError,
    ExperimentSpec,
    cell_label,
    curves,
    expand,
    load_experiment,
    summarize,
)
from service.core.records import (
    ExperimentRecord,
    JobRecord,
    new_experiment_id,
    new_job_id,
    valid_experiment_id,
)
from service.core.resolve import resolve_spec
from service.core.settings import queue_for
from service.core.store import Store
from service.core.webhooks import check_url

__all__ = ["router"]

router = APIRouter(prefix="/v1/experiments", tags=["experiments"], responses=error_responses(401, 503))

_EXAMPLE = {
    "name": "RTE: ChildTuning-D vs vanilla",
    "base": {
        "model": "minilm-l6",
        "recipe": "childtuning-paper",
        "dataset": {"preset": "glue/rte"},
        "childtuning": {"reserve_p": 0.3},
    },
    "axes": {"childtuning.mode": ["vanilla", "childtuning-d"], "hyperparameters.seed": [42, 52, 57]},
    "baseline": {"childtuning.mode": "vanilla"},
    "score": "final",
    "max_parallel": 2,
}

# Eval records of finished jobs never change: kept here (job id -> records), newest last.
_EVALS: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_EVALS_MAX = 4096


def _invalid(errors: list[tuple[str, str]]) -> ApiError:
    message = "; ".join(f"{field}: {text}" for field, text in errors)
    return ApiError(422, "invalid_experiment", message, errors[0][0] if errors else None)


def owned_experiment(store: Store, exp_id: str, tenant: str) -> ExperimentRecord:
    """The caller's experiment, else 404 (another tenant's looks exactly like a missing one)."""
    record = store.get_experiment(exp_id, tenant) if valid_experiment_id(exp_id) else None
    if record is None:
        raise ApiError.not_found("experiment", exp_id)
    return record


def _evals(store: Store, job: JobRecord | None) -> list[dict[str, Any]]:
    """The job's eval records, from its metrics stream (cached once the job has finished)."""
    if job is None:
        return []
    cached = _EVALS.get(job.id)
    if cached is not None:
        return cached
    records: list[dict[str, Any]] = []
    after = "0"
    while True:
        page = store.read_stream(job.id, "metrics", after=after, limit=5000)
        records += [r for r in page.items if r.get("kind") == "eval"]
        if not page.items or page.next_cursor is None:
            break
        after = page.next_cursor
    if job.status in FINAL_STATUSES:
        _EVALS[job.id] = records
        while len(_EVALS) > _EVALS_MAX:
            _EVALS.popitem(last=False)
    return records


def _summary(store: Store, experiment: ExperimentRecord) -> dict[str, Any]:
    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    spec = ExperimentSpec.model_validate(experiment.spec)
    evals = None
    if spec.score == "best" and spec.metric is not None:  # the best of another metric than the main
        evals = {job.id: _evals(store, job) for job in jobs if job is not None}
    return summarize(experiment, jobs, evals)


def _curves(store: Store, experiment: ExperimentRecord, metric: str | None) -> dict[str, Any]:
    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    evals = {job.id: _evals(store, job) for job in jobs if job is not None}
    if metric is None:
        metric = summarize(experiment, jobs)["metric"]
    return curves(experiment, evals, metric)


@router.post(
    "",
    status_code=201,
    response_model=ExperimentPublic,
    summary="Run a grid of jobs and compare them",
    responses=error_responses(
        400, 422, descriptions={422: "The grid is invalid; error.field names the first bad cell or field."}
    ),
)
def create_experiment(
    body: Annotated[
        dict[str, Any], Body(openapi_examples={"example1": {"summary": "D vs vanilla", "value": _EXAMPLE}})
    ],
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> dict[str, Any]:
    """Expand the grid (the base spec with each cell's axis values), validate and resolve every
    cell, then create them all as jobs of the experiment; nothing is created when any cell is
    invalid. At most ``max_parallel`` of its jobs run at once; the rest wait, holding no worker."""
    where = not_unicode(body)
    if where is not None:
        raise _invalid([(where or "body", "not valid Unicode text (a lone surrogate such as \\ud800)")])
    try:
        spec = load_experiment(body)
        cells = expand(spec)
    except ExperimentError as exc:
        raise _invalid(exc.errors) from exc
    webhook_problem = check_url(spec.webhook_url, settings) if spec.webhook_url is not None else None
    if webhook_problem is not None:
        raise _invalid([("webhook_url", webhook_problem)])
    jobs: list[JobRecord] = []
    errors: list[tuple[str, str]] = []
    for cell in cells:
        try:
            resolved = resolve_spec(cell.job, tenant, store, settings)
        except SpecError as exc:
            errors.append(
                (f"cell [{cell_label(cell.values)}]", f"{exc.field}: {exc}" if exc.field else str(exc))
            )
            continue
        jobs.append(
            JobRecord(
                id=new_job_id(),
                tenant=tenant,
                spec=cell.job.model_dump(mode="json"),
                resolved_spec=resolved.model_dump(mode="json"),
                queue=queue_for(cell.job.resources.device, cell.job.resources.num_ranks),
            )
        )
    if errors:
        raise _invalid(errors[:10])
    experiment = ExperimentRecord(
        id=new_experiment_id(),
        tenant=tenant,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        jobs=[{"id": job.id, "values": cell.values} for job, cell in zip(jobs, cells, strict=True)],
    )
    experiment = store.create_experiment(experiment, jobs)
    advance(store, celery, experiment.id)  # a broker failure leaves them waiting: the sweep sends them
    return _summary(store, experiment)


@router.get("", response_model=ExperimentList, summary="List experiments, newest first")
def list_experiments(
    tenant: TenantDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(pattern=r"^\d{1,20}$", description="next_cursor of the last page")
    ] = None,
) -> dict[str, Any]:
    page = store.list_experiments(tenant, limit=limit, cursor=cursor)
    return {"data": [_summary(store, e) for e in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/{exp_id}",
    response_model=ExperimentPublic,
    summary="One experiment: counts, scores, comparison with the baseline",
    responses=error_responses(404),
)
def get_experiment(exp_id: str, tenant: TenantDep, store: StoreDep) -> dict[str, Any]:
    """Per cell: n, mean, standard deviation, min and max of the score over its seeds; against
    the baseline, the paired difference over shared seeds with its 95% interval and a verdict."""
    return _summary(store, owned_experiment(store, exp_id, tenant))


@router.get(
    "/{exp_id}/curves",
    response_model=ExperimentCurves,
    summary="Each cell's eval metric by step, over its seeds",
    responses=error_responses(404),
)
def experiment_curves(
    exp_id: str,
    tenant: TenantDep,
    store: StoreDep,
    metric: Annotated[
        str | None,
        Query(
            max_length=100, pattern=r"^[A-Za-z0-9_]+$", description="An eval key; default the compared one."
        ),
    ] = None,
) -> dict[str, Any]:
    return _curves(store, owned_experiment(store, exp_id, tenant), metric)


@router.post(
    "/{exp_id}/cancel",
    response_model=ExperimentPublic,
    summary="Cancel every job of an experiment",
    responses=error_responses(
        404, 409, descriptions={409: "Every job has finished (code experiment_finished)."}
    ),
)
def cancel_experiment(exp_id: str, tenant: TenantDep, store: StoreDep, celery: CeleryDep) -> dict[str, Any]:
    """Waiting and queued jobs are cancelled at once, running ones within seconds."""
    experiment = owned_experiment(store, exp_id, tenant)
    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    if all(job is None or job.status in FINAL_STATUSES for job in jobs):
        raise ApiError(409, "experiment_finished", f"every job of experiment {exp_id} has finished already")
    store.request_experiment_cancel(exp_id)
    store.drop_pending(exp_id)
    for job in jobs:
        if job is not None and job.status not in FINAL_STATUSES:
            store.request_cancel(job.id)
    advance(store, celery, exp_id)
    return _summary(store, owned_experiment(store, exp_id, tenant))


@router.get(
    "/{exp_id}/plots",
    response_model=PlotList,
    summary="The experiment's plots (PNG)",
    responses=error_responses(404),
)
def list_plots(exp_id: str, tenant: TenantDep, store: StoreDep) -> dict[str, Any]:
    from service.core.plots import DESCRIPTIONS, PLOTS

    owned_experiment(store, exp_id, tenant)
    return {
        "data": [
            {"name": name, "description": DESCRIPTIONS[name], "url": f"/v1/experiments/{exp_id}/plots/{name}"}
            for name in PLOTS
        ]
    }


@router.get(
    "/{exp_id}/plots/{name}",
    summary="One plot, drawn from the experiment's current results",
    response_class=FileResponse,
    responses={**error_responses(404), 200: {"content": {"image/png": {}}, "description": "A PNG image."}},
)
def get_plot(
    exp_id: str, name: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> FileResponse:
    """Drawn when asked and kept under the experiment's artifact folder until its results change."""
    from service.core.plots import PLOTS, render_cached

    experiment = owned_experiment(store, exp_id, tenant)
    if name not in PLOTS:
        raise ApiError(404, "not_found", f"no plot {name!r}; plots: {', '.join(PLOTS)}", "name")
    summary = _summary(store, experiment)
    folder = settings.experiments_dir / exp_id / "plots"
    path = render_cached(name, summary, _curves(store, experiment, summary["metric"]), folder)
    return FileResponse(path, media_type="image/png")
