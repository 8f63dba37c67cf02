"""PNG plots of an experiment, drawn from the summary and the curves the REST API serves.

``curves.png`` is each cell's eval metric by step, ``scores.png`` each cell's score (against the
reserve ratio p when p is an axis) and ``seeds.png`` the spread of the scores over seeds with the
verdict of each cell against the baseline. Only matplotlib's object-oriented API is used (no
pyplot: this runs in server threads), matplotlib is imported on first use so importing this
module stays cheap, and a lock serialises rendering. :func:`render_cached` skips a plot whose
data (:func:`fingerprint`) has not changed since it was last written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["DESCRIPTIONS", "PLOTS", "fingerprint", "render", "render_cached"]

PLOTS: tuple[str, ...] = ("curves.png", "scores.png", "seeds.png")
DESCRIPTIONS: dict[str, str] = {
    "curves.png": "Each cell's eval metric by step: mean over seeds with its min-max band.",
    "scores.png": "Each cell's score, mean over seeds with std error bars (against p when p is an axis).",
    "seeds.png": "Each cell's score per seed with its mean, and its verdict against the baseline.",
}

P_AXIS = "childtuning.reserve_p"
SIZE = (8.0, 5.0)  # inches
DPI = 100
STYLE = 1  # bump when the drawing changes, so cached plots are redrawn
EMPTY = "no finished jobs yet"
VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red"}

_LOCK = threading.Lock()


def render(name: str, summary: Mapping[str, Any], curves: Mapping[str, Any], path: Path) -> Path:
    """Draw plot ``name`` (one of :data:`PLOTS`) into ``path`` atomically; returns ``path``."""
    draw = _drawer(name)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    with _LOCK:
        fig = Figure(figsize=SIZE, dpi=DPI, layout="tight")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if not draw(ax, summary, curves):
            ax.set_axis_off()
            ax.text(0.5, 0.5, EMPTY, ha="center", va="center", fontsize="x-large", transform=ax.transAxes)
        ax.set_title(_title(name, summary, curves), fontsize="medium")
        _atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI))
    return path


def fingerprint(summary: Mapping[str, Any], curves: Mapping[str, Any], name: str | None = None) -> str:
    """A short sha256 hex of the data plot ``name`` draws (of all plots when ``name`` is None)."""
    names = PLOTS if name is None else (_check(name),)
    used = {plot: _used(plot, summary, curves) for plot in names}
    blob = json.dumps({"style": STYLE, "plots": used}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_cached(name: str, summary: Mapping[str, Any], curves: Mapping[str, Any], folder: Path) -> Path:
    """``folder/name``, drawn unless it exists and its sidecar ``folder/.name.sha`` holds the
    fingerprint of the same data."""
    _check(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, sidecar = folder / name, folder / f".{name}.sha"
    digest = fingerprint(summary, curves, name)
    try:
        if path.is_file() and sidecar.read_text().strip() == digest:
            return path
    except OSError:
        pass
    render(name, summary, curves, path)
    _atomic_write(sidecar, lambda fh: fh.write(f"{digest}\n".encode()))
    return path


# -- the plots -----------------------------------------------------------------------------------


def _draw_curves(ax: Axes, summary: Mapping[str, Any], curves: Mapping[str, Any]) -> bool:
    colours = _colours(summary, curves)
    names = _short_names(summary, curves)
    drawn = False
    for cell in _cells(curves):
        points = sorted(
            (
                p
                for p in cell.get("points") or []
                if _num(p.get("step")) is not None and _num(p.get("mean")) is not None
            ),
            key=lambda p: float(p["step"]),
        )
        if not points:
            continue
        steps = [float(p["step"]) for p in points]
        means = [float(p["mean"]) for p in points]
        lows, highs = [], []
        for p, mean in zip(points, means, strict=True):
            lo, hi, std = _num(p.get("min")), _num(p.get("max")), _num(p.get("std"))
            if lo is None or hi is None:
                lo, hi = (mean - std, mean + std) if std is not None else (mean, mean)
            lows.append(lo)
            highs.append(hi)
        colour = colours.get(str(cell.get("label")), "C0")
        ax.plot(steps, means, color=colour, marker="o", markersize=3, label=_cell_label(cell, names))
        ax.fill_between(steps, lows, highs, color=colour, alpha=0.2, linewidth=0)
        drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel(f"dev {_metric(summary, curves)}")
        ax.grid(alpha=0.3)
        _legend(ax)
    return drawn


def _draw_scores(ax: Axes, summary: Mapping[str, Any], curves: Mapping[str, Any]) -> bool:
    cells = [c for c in _cells(summary) if _num(c.get("mean")) is not None]
    if not cells:
        return False
    ax.set_ylabel(_score_text(summary, curves))
    ax.grid(axis="y", alpha=0.3)
    p_values = [_num(v) for v in (summary.get("axes") or {}).get(P_AXIS) or []]
    if len(p_values) >= 2 and None not in p_values:
        _scores_by_p(ax, summary, curves, cells, [float(p) for p in p_values if p is not None])
        return True
    from matplotlib.patches import Patch

    colours = _colours(summary, curves)
    names = _short_names(summary, curves)
    best = summary.get("best_cell")
    xs = range(len(cells))
    for x, cell in zip(xs, cells, strict=False):
        is_best = best is not None and cell.get("label") == best
        ax.bar(
            x,
            float(cell["mean"]),
            yerr=_num(cell.get("std")),
            capsize=4,
            color=colours.get(str(cell.get("label")), "C0"),
            edgecolor="black" if is_best else "dimgrey" if cell.get("baseline") else "none",
            linewidth=2.5 if is_best else 0.8 if cell.get("baseline") else 0,
            hatch="//" if cell.get("baseline") else None,
            alpha=1.0 if is_best or best is None else 0.75,
        )
    ax.set_xticks(list(xs), [_cell_label(c, names) for c in cells], rotation=20, ha="right", fontsize="small")
    handles = []
    if best is not None and any(c.get("label") == best for c in cells):
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.5, label="best"))
    if any(c.get("baseline") for c in cells):
        handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="baseline"))
    if handles:
        ax.legend(handles=handles, fontsize="small")
    return True


def _scores_by_p(
    ax: Axes,
    summary: Mapping[str, Any],
    curves: Mapping[str, Any],
    cells: list[Mapping[str, Any]],
    p_values: list[float],
) -> None:
    others = [a for a in summary.get("axes") or {} if a not in (P_AXIS, summary.get("seed_axis"))]
    names = _short_names(summary, curves)
    groups: dict[str, list[tuple[float, float, float | None, bool]]] = {}
    for cell in cells:
        values = cell.get("values") or {}
        p = _num(values.get(P_AXIS))
        if p is None:
            continue
        key = _values_label({a: values.get(a) for a in others}, names) if others else "mean over seeds"
        is_best = summary.get("best_cell") is not None and cell.get("label") == summary.get("best_cell")
        groups.setdefault(key, []).append((p, float(cell["mean"]), _num(cell.get("std")), is_best))
    for i, (key, points) in enumerate(groups.items()):
        points.sort()
        colour = f"C{i % 10}"
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] or 0.0 for p in points],
            color=colour,
            marker="o",
            capsize=4,
            label=key,
        )
        for p, mean, _, is_best in points:
            if is_best:
                ax.plot([p], [mean], marker="*", markersize=16, color=colour, markeredgecolor="black")
    ax.set_xticks(sorted(set(p_values)))
    ax.set_xlabel(f"{names.get(P_AXIS, P_AXIS)} (reserve ratio p)")
    _legend(ax)


def _draw_seeds(ax: Axes, summary: Mapping[str, Any], curves: Mapping[str, Any]) -> bool:
    columns = []
    for cell in _cells(summary):
        scores = [s for s in (_num(v) for v in (cell.get("scores") or {}).values()) if s is not None]
        if scores:
            columns.append((cell, scores))
    if not columns:
        return False
    colours = _colours(summary, curves)
    names = _short_names(summary, curves)
    for x, (cell, scores) in enumerate(columns):
        colour = colours.get(str(cell.get("label")), "C0")
        ax.scatter([x] * len(scores), scores, color=colour, alpha=0.8, zorder=3)
        mean = _num(cell.get("mean"))
        mean = sum(scores) / len(scores) if mean is None else mean
        ax.hlines(mean, x - 0.25, x + 0.25, color="black", linewidth=2, zorder=4)
        note, note_colour = _verdict(cell)
        if note:
            ax.annotate(
                note,
                (x, max(scores)),
                xytext=(0, 8),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize="small",
                color=note_colour,
            )
    labels = [f"{_cell_label(c, names)}\n(n={len(s)})" for c, s in columns]
    ax.set_xticks(range(len(columns)), labels, rotation=20, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.margins(y=0.2)
    ax.set_ylabel(_score_text(summary, curves, per_seed=True))
    ax.grid(axis="y", alpha=0.3)
    return True


def _verdict(cell: Mapping[str, Any]) -> tuple[str, str]:
    if cell.get("baseline"):
        return "baseline", "black"
    vs = cell.get("vs_baseline")
    if not isinstance(vs, Mapping) or not vs.get("verdict"):
        return "", "black"
    verdict = str(vs["verdict"])
    diff = _num(vs.get("mean_diff"))
    text = verdict if diff is None else f"{verdict}\n{diff:+.3g}"
    return text, VERDICT_COLOURS.get(verdict, "dimgrey")


# -- shared helpers ------------------------------------------------------------------------------


Drawer = Callable[["Axes", Mapping[str, Any], Mapping[str, Any]], bool]
_DRAWERS: dict[str, Drawer] = {
    "curves.png": _draw_curves,
    "scores.png": _draw_scores,
    "seeds.png": _draw_seeds,
}


def _check(name: str) -> str:
    if name not in PLOTS:
        raise ValueError(f"unknown plot {name!r}; plots: {', '.join(PLOTS)}")
    return name


def _drawer(name: str) -> Drawer:
    return _DRAWERS[_check(name)]


def _used(name: str, summary: Mapping[str, Any], curves: Mapping[str, Any]) -> dict[str, Any]:
    """Exactly what plot ``name`` reads from the summary and the curves."""
    head = {
        k: summary.get(k) for k in ("id", "name", "metric", "score", "higher_is_better", "axes", "seed_axis")
    }
    head["curves_metric"] = curves.get("metric")
    labels = [c.get("label") for c in _cells(summary)]
    if name == "curves.png":
        return {
            **head,
            "labels": labels,
            "cells": [_pick(c, ("label", "values", "points")) for c in _cells(curves)],
        }
    keys: tuple[str, ...] = ("label", "values", "n", "mean", "std", "baseline")
    if name == "scores.png":
        head["best_cell"] = summary.get("best_cell")
    else:
        keys += ("scores", "vs_baseline")
    return {**head, "cells": [_pick(c, keys) for c in _cells(summary)]}


def _pick(cell: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: cell.get(k) for k in keys}


def _cells(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in data.get("cells") or [] if isinstance(c, Mapping)]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _colours(summary: Mapping[str, Any], curves: Mapping[str, Any]) -> dict[str, str]:
    """One colour a cell, the same in every plot (the summary's cell order first)."""
    colours: dict[str, str] = {}
    for cell in (*_cells(summary), *_cells(curves)):
        label = str(cell.get("label"))
        colours.setdefault(label, f"C{len(colours) % 10}")
    return colours


def _short_names(summary: Mapping[str, Any], curves: Mapping[str, Any]) -> dict[str, str]:
    """Axis path -> its last part ("childtuning.mode" -> "mode"), unless two paths share it."""
    paths = set(summary.get("axes") or {})
    for cell in (*_cells(summary), *_cells(curves)):
        paths.update(cell.get("values") or {})
    last = {path: path.rsplit(".", 1)[-1] for path in paths}
    taken = [short for short in last.values()]
    return {path: short if taken.count(short) == 1 else path for path, short in last.items()}


def _values_label(values: Mapping[str, Any], names: Mapping[str, str]) -> str:
    parts = []
    for path, value in values.items():
        shown = f"{value:g}" if _num(value) is not None else str(value)
        parts.append(f"{names.get(path, path)}={shown}")
    return ", ".join(parts)


def _cell_label(cell: Mapping[str, Any], names: Mapping[str, str]) -> str:
    values = cell.get("values")
    if isinstance(values, Mapping) and values:
        return _values_label(values, names)
    label = str(cell.get("label") or "")
    return re.sub(r"(?<![\w.])(?:\w+\.)+(?=\w+=)", "", label) or "all"


def _legend(ax: Axes) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", ncols=1 if len(handles) <= 8 else 2)


def _metric(summary: Mapping[str, Any], curves: Mapping[str, Any]) -> str:
    return str(summary.get("metric") or curves.get("metric") or "main metric")


def _score_text(summary: Mapping[str, Any], curves: Mapping[str, Any], per_seed: bool = False) -> str:
    kind = "best" if summary.get("score") == "best" else "final-step"
    return f"{kind} dev {_metric(summary, curves)}, {'per seed' if per_seed else 'mean over seeds'}"


def _title(name: str, summary: Mapping[str, Any], curves: Mapping[str, Any]) -> str:
    exp_id, exp_name = summary.get("id"), summary.get("name")
    who = f"{exp_name} ({exp_id})" if exp_name and exp_id else str(exp_name or exp_id or "experiment")
    if name == "curves.png":
        what = f"dev {_metric(summary, curves)} by step (mean over seeds, min-max band)"
    elif name == "seeds.png":
        ns = sorted({int(n) for c in _cells(summary) if (n := _num(c.get("n"))) is not None and n > 0})
        spread = "n per cell: " + (f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}" if ns else "0")
        what = f"{_score_text(summary, curves, per_seed=True)}; {spread}"
    else:
        what = _score_text(summary, curves)
    better = summary.get("higher_is_better")
    if better is not None and name != "curves.png":
        what += f" ({'higher' if better else 'lower'} is better)"
    return f"{who}\n{what}"


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """Write through ``write(binary file)`` to a temporary file beside ``path``, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
