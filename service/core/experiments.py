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
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.core.contract import JobSpec, SpecError, load_spec

__all__ = ["MAX_CELLS", "Cell", "ExperimentError", "ExperimentSpec", "expand", "load_experiment"]

# Jobs one experiment may create (cells of the grid, seeds included).
MAX_CELLS = 256
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
    metric: str | None = Field(default=None, max_length=100, description="Eval key; null = the main metric.")
    score: Score = Field(default="final", description="final (the paper's choice) or best.")
    max_parallel: int = Field(default=2, ge=1, le=64, description="Jobs of the experiment running at once.")

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


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{path}={value!r}" for path, value in values.items())


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
    if size > MAX_CELLS:
        raise ExperimentError(
            [("axes", f"the grid has {size} cells; at most {MAX_CELLS} (split it into several experiments)")]
        )
    errors: list[tuple[str, str]] = []
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
        data = copy.deepcopy(spec.base)
        for path, value in values.items():
            _set(data, path, value)
        try:
            cells.append(Cell(values, load_spec(data, strict=True)))
        except SpecError as exc:
            invalid += 1
            if invalid <= MAX_LISTED:
                problems = "; ".join(f"{field}: {message}" for field, message in exc.errors)
                errors.append((f"cell [{_label(values)}]", problems))
    if invalid > MAX_LISTED:
        errors.append(("axes", f"{invalid - MAX_LISTED} more invalid cells not listed"))
    if errors:
        raise ExperimentError(errors)
    return cells
