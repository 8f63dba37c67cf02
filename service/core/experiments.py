"""An experiment's grid: a base job spec and axes of values, expanded into one job spec a cell.

The first piece of the experiments resource (issue 12): what ``POST /v1/experiments`` will
validate before anything is created. :func:`expand` makes every cell's job spec (the base with
the cell's axis values set at their field paths) and checks it against the job contract; when
any cell is invalid it raises :class:`ExperimentError` naming each such cell by its axis
values, so a grid is created whole or not at all.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.core.comparison import (
    SEED_AXIS,
    JobScore,
    cell_label,
    compare_cells,
    curve_points,
    job_score,
    metric_key,
)
from service.core.contract import STATUSES, JobSpec, SpecError, load_spec
from service.core.contract.urls import url_problem
from service.core.contract.vocabulary import FINAL_STATUSES, MAX_WEBHOOK_URL, higher_is_better
from service.core.records import DISPATCHING, WAITING, ExperimentRecord, JobRecord

__all__ = [
    "MAX_CELLS",
    "Cell",
    "ExperimentError",
    "ExperimentSpec",
    "curves",
    "expand",
    "experiment_status",
    "load_experiment",
    "main_metric_of",
    "matches",
    "summarize",
]

# Jobs one experiment may create (cells of the grid, seeds included).
MAX_CELLS = 256
MAX_GRID = 16 * MAX_CELLS  # the product of the axes, before exclusions
MAX_LISTED = 10  # invalid cells named in one error; the rest are counted

Score = Literal["final", "best"]


class ExperimentError(ValueError):
    """The grid cannot run: ``errors`` holds (field, message) pairs, like a SpecError."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("\n".join(f"{field}: {message}" for field, message in errors))


class ExperimentSpec(BaseModel):
    """The body of an experiment: a base job spec, the axes of its grid and how to compare."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(default=None, max_length=200)
    base: dict[str, Any] = Field(description="A job spec; each cell sets its axis values in a copy.")
    axes: dict[str, list[Any]] = Field(
        min_length=1,
        description='Spec field path -> values, e.g. {"childtuning.mode": ["vanilla", "childtuning-d"], '
        '"hyperparameters.seed": [42, 52, 57]}; the grid is their product.',
    )
    baseline: dict[str, Any] | None = Field(
        default=None,
        description="The cells others are compared with, by axis values, "
        'e.g. {"childtuning.mode": "vanilla"}.',
    )
    exclude: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_CELLS,
        description="Cells left out of the grid, each by some of its axis values: a cell matching "
        'every value of one entry is dropped, e.g. [{"recipe": "rdrop-paper", "childtuning.mode": '
        '"childtuning-d"}].',
    )
    metric: str | None = Field(default=None, max_length=100, description="Eval key; null = the main metric.")
    score: Score = Field(default="final", description="final (the paper's choice) or best.")
    max_parallel: int = Field(default=2, ge=1, le=64, description="Jobs of the experiment running at once.")
    webhook_url: str | None = Field(
        default=None,
        max_length=MAX_WEBHOOK_URL,
        description="Where to POST a signed JSON event when every job has finished (as a job's "
        "webhook_url; one in base notifies each job too): docs/service.md, Notifications.",
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_shape(cls, value: str | None) -> str | None:
        problem = url_problem(value) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("axes")
    @classmethod
    def _axes_shape(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in axes.items():
            parts = path.split(".")
            if not all(part.isidentifier() for part in parts) or len(parts) > 3:
                raise ValueError(f"axis {path!r}: give a field path like childtuning.reserve_p")
            if not values:
                raise ValueError(f"axis {path!r}: give at least one value")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"axis {path!r}: a value appears twice")
        return axes


@dataclass(frozen=True, slots=True)
class Cell:
    values: dict[str, Any]  # axis path -> this cell's value
    job: JobSpec


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = copy.deepcopy(value)


def matches(values: dict[str, Any], subset: dict[str, Any]) -> bool:
    """Whether a cell's axis ``values`` hold every path = value of ``subset`` (an exclude entry,
    the baseline)."""
    return all(values.get(path) == value for path, value in subset.items())


def load_experiment(data: Any) -> ExperimentSpec:
    """An :class:`ExperimentSpec` from a mapping, or :class:`ExperimentError` naming the fields."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        errors = [
            (".".join(str(part) for part in err["loc"]), str(err["msg"]).removeprefix("Value error, "))
            for err in exc.errors(include_url=False)
        ]
        raise ExperimentError(errors) from None


def expand(spec: ExperimentSpec) -> list[Cell]:
    """Every cell of the grid with its validated job spec, in axis order (the last axis fastest).

    Raises :class:`ExperimentError` when the grid is larger than :data:`MAX_CELLS`, when the
    baseline names no cell, or when any cell's job spec is invalid (each named by its values)."""
    paths = list(spec.axes)
    size = 1
    for axis_values in spec.axes.values():
        size *= len(axis_values)
    too_many = f"; at most {MAX_CELLS} (split it into several experiments)"
    if size > MAX_GRID:
        raise ExperimentError([("axes", f"the grid has {size} cells before exclusions{too_many}")])
    errors: list[tuple[str, str]] = []
    for i, entry in enumerate(spec.exclude):
        if not entry:
            errors.append((f"exclude.{i}", "give at least one axis value"))
        for path, value in entry.items():
            if path not in spec.axes:
                errors.append((f"exclude.{i}.{path}", f"is not an axis; axes: {', '.join(paths)}"))
            elif not any(value == v for v in spec.axes[path]):
                errors.append(
                    (f"exclude.{i}.{path}", f"{value!r} is not one of the axis values {spec.axes[path]!r}")
                )
    for path, value in (spec.baseline or {}).items():
        if path not in spec.axes:
            errors.append((f"baseline.{path}", f"is not an axis; axes: {', '.join(paths)}"))
        elif not any(value == v for v in spec.axes[path]):
            errors.append(
                (f"baseline.{path}", f"{value!r} is not one of the axis values {spec.axes[path]!r}")
            )
    cells: list[Cell] = []
    invalid = 0
    for combo in itertools.product(*(spec.axes[p] for p in paths)):
        values = dict(zip(paths, combo, strict=True))
        if any(matches(values, entry) for entry in spec.exclude if entry):
            continue
        data = copy.deepcopy(spec.base)
        for path, value in values.items():
            _set(data, path, value)
        try:
            cells.append(Cell(values, load_spec(data, strict=True)))
        except SpecError as exc:
            invalid += 1
            if invalid <= MAX_LISTED:
                problems = "; ".join(f"{field}: {message}" for field, message in exc.errors)
                errors.append((f"cell [{cell_label(values)}]", problems))
    if invalid > MAX_LISTED:
        errors.append(("axes", f"{invalid - MAX_LISTED} more invalid cells not listed"))
    if len(cells) + invalid > MAX_CELLS:
        raise ExperimentError([("axes", f"the grid has {len(cells) + invalid} cells{too_many}")])
    if not cells and not invalid and not errors:
        errors.append(("exclude", "leaves no cell of the grid"))
    baseline = spec.baseline or {}
    if baseline and not errors and not any(matches(c.values, baseline) for c in cells):
        errors.append(("baseline", "every cell it names is excluded"))
    if errors:
        raise ExperimentError(errors)
    return cells


# ------------------------------------------------------------------------------------ the view


def main_metric_of(jobs: Sequence[JobRecord | None]) -> str | None:
    """The main metric the jobs' evaluations were scored by (``eval_mcc``), once one has one."""
    for job in jobs:
        for record in (job.final_eval, job.best_eval, job.latest_eval) if job else ():
            if record and isinstance(record.get("main_metric"), str):
                return str(record["main_metric"])
    return None


def experiment_status(jobs: Sequence[JobRecord | None], cancel_requested: bool) -> str:
    """``queued`` until a job starts, ``running`` until every job has finished; then
    ``succeeded`` when all did, ``cancelled`` when it was cancelled or a job was and none failed,
    else ``failed``."""
    statuses = [job.status if job else "failed" for job in jobs]
    if not all(s in FINAL_STATUSES for s in statuses):
        return "queued" if all(s == "queued" for s in statuses) and not cancel_requested else "running"
    if all(s == "succeeded" for s in statuses):
        return "succeeded"
    if "failed" in statuses:
        return "failed"
    return "cancelled"


def summarize(
    experiment: ExperimentRecord,
    jobs: Sequence[JobRecord | None],
    evals: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """What ``GET /v1/experiments/{id}`` shows: status, counts, each job's score, each cell's
    spread over seeds and paired difference from the baseline, and the best cell.

    ``jobs`` are the experiment's job records in its order; ``evals`` (job id -> eval records)
    is needed only for ``score: best`` of a metric other than the main one."""
    spec = ExperimentSpec.model_validate(experiment.spec)
    main = main_metric_of(jobs)
    metric = metric_key(spec.metric) if spec.metric else main
    higher = higher_is_better(metric) if metric else True
    counts = dict.fromkeys(("waiting", *STATUSES), 0)
    rows: list[dict[str, Any]] = []
    scores: list[JobScore] = []
    for entry, job in zip(experiment.jobs, jobs, strict=True):
        status = job.status if job else "failed"
        counts[status] += 1
        if job is not None and status == "queued" and job.phase in (WAITING, DISPATCHING):
            counts["waiting"] += 1
        score = None
        if job is not None and metric is not None:
            score = job_score(
                status, job.final_eval, job.best_eval, metric, spec.score, (evals or {}).get(job.id)
            )
        scores.append(JobScore(entry["id"], entry["values"], score))
        rows.append(
            {
                "id": entry["id"],
                "values": entry["values"],
                "status": status,
                "phase": job.phase if job else None,
                "step": job.step if job else 0,
                "total_steps": job.total_steps if job else None,
                "score": score,
                "error": job.error if job else "the job record is missing",
            }
        )
    cells, best = compare_cells(spec.axes, scores, spec.baseline, higher)
    status = experiment_status(jobs, experiment.cancel_requested)
    finished = [job.finished_at for job in jobs if job is not None and job.finished_at is not None]
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": status,
        "created_at": experiment.created_at,
        "finished_at": max(finished) if status in FINAL_STATUSES and finished else None,
        "metric": metric.removeprefix("eval_") if metric else None,
        "score": spec.score,
        "higher_is_better": higher,
        "max_parallel": spec.max_parallel,
        "axes": spec.axes,
        "seed_axis": SEED_AXIS if SEED_AXIS in spec.axes else None,
        "baseline": spec.baseline,
        "cancel_requested": experiment.cancel_requested,
        "counts": counts,
        "jobs": rows,
        "cells": cells,
        "best_cell": best,
    }


def curves(
    experiment: ExperimentRecord, evals: Mapping[str, Sequence[Mapping[str, Any]]], metric: str | None
) -> dict[str, Any]:
    """Each cell's eval ``metric`` by step: mean, std, min and max over its seeds."""
    spec = ExperimentSpec.model_validate(experiment.spec)
    key = metric_key(metric) if metric else None
    cell_axes = [path for path in spec.axes if path != SEED_AXIS]
    cells: dict[str, dict[str, Any]] = {}
    for entry in experiment.jobs:
        values = {path: entry["values"][path] for path in cell_axes}
        label = cell_label(values)
        cell = cells.setdefault(label, {"label": label, "values": values, "runs": []})
        if key is not None:
            run = [
                (int(r["step"]), float(r[key]))
                for r in evals.get(entry["id"], ())
                if isinstance(r.get(key), int | float) and isinstance(r.get("step"), int)
            ]
            cell["runs"].append(run)
    return {
        "metric": key.removeprefix("eval_") if key else None,
        "cells": [
            {"label": c["label"], "values": c["values"], "points": curve_points(c["runs"])}
            for c in cells.values()
        ],
    }
