"""Experiments: submit a grid (every cell validated and resolved, all created at once or none),
cancel every job of one, and the summary and curves the API answers with."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from celery import Celery

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
from service.core.records import ExperimentRecord, JobRecord, new_experiment_id, valid_experiment_id
from service.core.resolve import resolve_spec
from service.core.settings import Settings
from service.core.store import Store
from service.core.usecases.errors import Conflict, Invalid, NotFound
from service.core.usecases.jobs import new_job_record
from service.core.usecases.text import NOT_UNICODE, not_unicode
from service.core.webhooks.guard import check_url

__all__ = [
    "cancel_experiment",
    "experiment_curves",
    "experiment_summary",
    "owned_experiment",
    "submit_experiment",
]

INVALID = "invalid_experiment"
MAX_CELL_ERRORS = 10  # cell errors named in one answer

# Eval records of finished jobs never change: kept here (job id -> records), newest last.
_EVALS: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_EVALS_MAX = 4096


def owned_experiment(store: Store, exp_id: str, tenant: str) -> ExperimentRecord:
    """The tenant's experiment, else :class:`NotFound` (another tenant's looks like a missing one)."""
    record = store.get_experiment(exp_id, tenant) if valid_experiment_id(exp_id) else None
    if record is None:
        raise NotFound("experiment", exp_id)
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


def experiment_summary(store: Store, experiment: ExperimentRecord) -> dict[str, Any]:
    """The experiment's summary (``service.core.experiments.summarize``) from its jobs now."""
    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    spec = ExperimentSpec.model_validate(experiment.spec)
    evals = None
    if spec.score == "best" and spec.metric is not None:  # the best of another metric than the main
        evals = {job.id: _evals(store, job) for job in jobs if job is not None}
    return summarize(experiment, jobs, evals)


def experiment_curves(store: Store, experiment: ExperimentRecord, metric: str | None) -> dict[str, Any]:
    """Each cell's eval ``metric`` (default: the compared one) by step, over its seeds."""
    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    evals = {job.id: _evals(store, job) for job in jobs if job is not None}
    if metric is None:
        metric = summarize(experiment, jobs)["metric"]
    return curves(experiment, evals, metric)


def submit_experiment(
    body: Any, tenant: str, store: Store, settings: Settings, celery: Celery
) -> ExperimentRecord:
    """Expand the grid (the base spec with each cell's axis values), validate and resolve every
    cell, then create them all as jobs of the experiment; nothing is created when any cell is
    invalid (:class:`Invalid` names up to :data:`MAX_CELL_ERRORS` cells). At most
    ``max_parallel`` of its jobs are sent at once; the rest wait, holding no worker."""
    where = not_unicode(body)
    if where is not None:
        raise Invalid(INVALID, [(where or "body", NOT_UNICODE)])
    try:
        spec = load_experiment(body)
        cells = expand(spec)
    except ExperimentError as exc:
        raise Invalid(INVALID, exc.errors) from exc
    webhook_problem = check_url(spec.webhook_url, settings) if spec.webhook_url is not None else None
    if webhook_problem is not None:
        raise Invalid(INVALID, [("webhook_url", webhook_problem)])
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
        jobs.append(new_job_record(tenant, cell.job, resolved))
    if errors:
        raise Invalid(INVALID, errors[:MAX_CELL_ERRORS])
    experiment = ExperimentRecord(
        id=new_experiment_id(),
        tenant=tenant,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        jobs=[{"id": job.id, "values": cell.values} for job, cell in zip(jobs, cells, strict=True)],
    )
    experiment = store.create_experiment(experiment, jobs)
    advance(store, celery, experiment.id)  # a broker failure leaves them waiting: the sweep sends them
    return experiment


def cancel_experiment(store: Store, celery: Celery, exp_id: str, tenant: str) -> ExperimentRecord:
    """Waiting and queued jobs are cancelled at once, running ones within seconds; an experiment
    whose jobs have all finished is a :class:`Conflict`."""
    experiment = owned_experiment(store, exp_id, tenant)
    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    if all(job is None or job.status in FINAL_STATUSES for job in jobs):
        raise Conflict(f"every job of experiment {exp_id} has finished already", code="experiment_finished")
    store.request_experiment_cancel(exp_id)
    store.drop_pending(exp_id)
    for job in jobs:
        if job is not None and job.status not in FINAL_STATUSES:
            store.request_cancel(job.id)
    advance(store, celery, exp_id)
    return owned_experiment(store, exp_id, tenant)
