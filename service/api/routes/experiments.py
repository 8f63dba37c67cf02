"""``/v1/experiments``: a grid of jobs compared over seeds against a baseline."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import FileResponse

from service.api.deps import CeleryDep, SettingsDep, StoreDep, TenantDep
from service.api.errors import ApiError, error_responses
from service.api.schemas import ExperimentCurves, ExperimentList, ExperimentPublic, PlotList
from service.core.usecases.experiments import cancel_experiment as cancel_experiment_case
from service.core.usecases.experiments import experiment_curves as curves_of
from service.core.usecases.experiments import experiment_summary, owned_experiment, submit_experiment

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
    experiment = submit_experiment(body, tenant, store, settings, celery)
    return experiment_summary(store, experiment)


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
    return {"data": [experiment_summary(store, e) for e in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/{exp_id}",
    response_model=ExperimentPublic,
    summary="One experiment: counts, scores, comparison with the baseline",
    responses=error_responses(404),
)
def get_experiment(exp_id: str, tenant: TenantDep, store: StoreDep) -> dict[str, Any]:
    """Per cell: n, mean, standard deviation, min and max of the score over its seeds; against
    the baseline, the paired difference over shared seeds with its 95% interval and a verdict."""
    return experiment_summary(store, owned_experiment(store, exp_id, tenant))


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
    return curves_of(store, owned_experiment(store, exp_id, tenant), metric)


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
    return experiment_summary(store, cancel_experiment_case(store, celery, exp_id, tenant))


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
    summary = experiment_summary(store, experiment)
    folder = settings.experiments_dir / exp_id / "plots"
    path = render_cached(name, summary, curves_of(store, experiment, summary["metric"]), folder)
    return FileResponse(path, media_type="image/png")
