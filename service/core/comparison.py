"""How an experiment's cells compare: scores, their spread over seeds, paired differences.

Pure functions over plain values (no store, no torch), shared by the API
(``GET /v1/experiments/{id}``) and the GLUE study's report, so both say the same thing.

- A job's **score** is one number of its dev evaluation: the last evaluation's (``final``, what
  the ChildTuning paper reports) or the best one's (``best``), of the experiment's metric.
- A **cell** is one point of the grid without the seed axis; its jobs are its seeds. It has n,
  mean, sample standard deviation, min and max of its jobs' scores.
- Against the **baseline** (the cell with the baseline's values on the baseline's axes and this
  cell's values on the others), the difference is paired by seed: the mean of the per-seed
  differences with a 95% Student-t confidence interval. The verdict is ``better`` or ``worse``
  when the interval excludes 0, else ``within noise``; ``too few seeds`` below 2 shared seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.core.contract.vocabulary import higher_is_better

__all__ = [
    "SEED_AXIS",
    "JobScore",
    "cell_label",
    "compare_cells",
    "curve_points",
    "job_score",
    "metric_key",
    "paired_difference",
    "spread",
    "t_quantile",
]

SEED_AXIS = "hyperparameters.seed"
CONFIDENCE = 0.95


def metric_key(metric: str) -> str:
    """The eval record's key of a metric named either way: ``mcc`` or ``eval_mcc``."""
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` (a positive integer) degrees of freedom.

    The closed form for integer degrees of freedom (Abramowitz & Stegun 26.7.3/26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = term
            for k in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
            return 2 / math.pi * (theta + s * math.cos(theta) * total)
        return 2 / math.pi * theta
    total, term = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| < t) = ``confidence`` (e.g. 4.303 for 0.95 and 2 degrees of freedom)."""
    if df < 1 or not 0 < confidence < 1:
        raise ValueError("df must be >= 1 and confidence in (0, 1)")
    low, high = 0.0, 1.0
    while _t_two_sided(high, df) < confidence:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        if _t_two_sided(mid, df) < confidence:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def spread(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation (None below 2), min and max (None when empty)."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean, std = _mean_std(values)
    return {"n": len(values), "mean": mean, "std": std, "min": min(values), "max": max(values)}


def paired_difference(diffs: Sequence[float], higher: bool = True) -> dict[str, Any]:
    """The mean of per-seed differences (cell - baseline), its 95% interval and the verdict."""
    if not diffs:
        return {"n": 0, "mean_diff": None, "ci95": None, "verdict": "too few seeds"}
    mean, std = _mean_std(diffs)
    if std is None:
        return {"n": len(diffs), "mean_diff": mean, "ci95": None, "verdict": "too few seeds"}
    half = t_quantile(CONFIDENCE, len(diffs) - 1) * std / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    if low > 0:
        verdict = "better" if higher else "worse"
    elif high < 0:
        verdict = "worse" if higher else "better"
    else:
        verdict = "within noise"
    return {"n": len(diffs), "mean_diff": mean, "ci95": [low, high], "verdict": verdict}


def job_score(
    status: str,
    final_eval: Mapping[str, Any] | None,
    best_eval: Mapping[str, Any] | None,
    metric: str,
    score: str,
    evals: Iterable[Mapping[str, Any]] | None = None,
) -> float | None:
    """A job's score, or None until it has one.

    ``final``: the last evaluation's value, once the job has succeeded (an unfinished or failed
    job has no final model). ``best``: the best evaluation's value so far, from ``best_eval``
    when ``metric`` is the one it was chosen by, else from ``evals`` (the job's eval records).
    """
    key = metric_key(metric)
    if score == "final":
        if status != "succeeded" or not final_eval:
            return None
        value = final_eval.get(key)
        return float(value) if isinstance(value, int | float) else None
    if best_eval and best_eval.get("main_metric") == key and isinstance(best_eval.get(key), int | float):
        return float(best_eval[key])
    # (an eval_at_start record scores the model before training: never a best)
    values = [
        float(r[key]) for r in evals or () if isinstance(r.get(key), int | float) and not r.get("at_start")
    ]
    if not values:
        return None
    return max(values) if higher_is_better(key) else min(values)


def cell_label(values: Mapping[str, Any]) -> str:
    """A cell's name: its axis values, ``path=value`` joined by commas (``-`` when none)."""
    return ", ".join(f"{path}={value!r}" for path, value in values.items()) or "-"


@dataclass(frozen=True, slots=True)
class JobScore:
    """One job of an experiment: its axis values and its score (None until it has one)."""

    id: str
    values: Mapping[str, Any]
    score: float | None


def _seed_key(values: Mapping[str, Any], seed_axis: str | None) -> str:
    return str(values[seed_axis]) if seed_axis and seed_axis in values else "-"


def compare_cells(
    axes: Mapping[str, Sequence[Any]],
    jobs: Sequence[JobScore],
    baseline: Mapping[str, Any] | None,
    higher: bool = True,
    seed_axis: str | None = SEED_AXIS,
) -> tuple[list[dict[str, Any]], str | None]:
    """The experiment's cells (grid order) with their spread and their paired difference from
    the baseline; and the label of the best cell (highest mean, or lowest for a loss)."""
    seed_axis = seed_axis if seed_axis in axes else None
    cell_axes = [path for path in axes if path != seed_axis]
    cells: dict[str, dict[str, Any]] = {}
    for job in jobs:
        values = {path: job.values[path] for path in cell_axes}
        label = cell_label(values)
        cell = cells.setdefault(label, {"label": label, "values": values, "jobs": [], "scores": {}})
        cell["jobs"].append(job.id)
        if job.score is not None:
            cell["scores"][_seed_key(job.values, seed_axis)] = job.score
    base = dict(baseline or {})
    for cell in cells.values():
        cell.update(spread(list(cell["scores"].values())))
        cell["baseline"] = bool(base) and all(cell["values"].get(p) == v for p, v in base.items())
        cell["vs_baseline"] = None
    if base:
        for cell in cells.values():
            if cell["baseline"]:
                continue
            partner = cell_label({p: base.get(p, v) for p, v in cell["values"].items()})
            other = cells.get(partner)
            if other is None:
                continue
            shared = sorted(set(cell["scores"]) & set(other["scores"]))
            diffs = [cell["scores"][s] - other["scores"][s] for s in shared]
            cell["vs_baseline"] = {"against": partner, **paired_difference(diffs, higher)}
    scored = [c for c in cells.values() if c["mean"] is not None]
    best = None
    if scored:
        pick = max if higher else min
        best = pick(scored, key=lambda c: c["mean"])["label"]
    return list(cells.values()), best


def curve_points(runs: Sequence[Sequence[tuple[int, float]]]) -> list[dict[str, Any]]:
    """One cell's eval metric by step over its seeds: n, mean, std, min and max at each step."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in run:
            by_step.setdefault(step, []).append(value)
    return [{"step": step, **spread(values)} for step, values in sorted(by_step.items())]
