"""The CLI's tables of experiments: pure functions of the API's experiment summary (and of a
listing of them), so they can be checked without a server. :func:`format_table` lines up any
table's columns; the numbers in them are :func:`service.cli.format.fmt_number`'s.

``childtune experiments`` shows :func:`list_rows`; ``experiment status`` :func:`job_rows`;
``experiment compare`` :func:`compare_header` over :func:`compare_rows` (:func:`compare_csv` with
``--csv``); ``experiment watch`` :func:`job_changes`, :func:`running_text` and :func:`bar_postfix`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.cli.format import fmt_number, fmt_time
from service.core.contract.vocabulary import FINAL_STATUSES, STATUSES

__all__ = [
    "COMPARE_CSV_HEADER",
    "COMPARE_HEADER",
    "COMPARE_RIGHT",
    "COUNT_KEYS",
    "LIST_HEADER",
    "bar_postfix",
    "compare_csv",
    "compare_csv_rows",
    "compare_header",
    "compare_rows",
    "counts_text",
    "finished_jobs",
    "format_table",
    "job_changes",
    "job_rows",
    "list_rows",
    "running_text",
    "status_text",
    "total_jobs",
]

# The order of the counts: the finished statuses first, then the live ones, furthest along first.
COUNT_KEYS: tuple[str, ...] = (
    *FINAL_STATUSES,
    *(status for status in reversed(STATUSES) if status not in FINAL_STATUSES),
)


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Columns padded to their widest cell (the columns in ``right`` aligned right), two spaces
    apart, no trailing blanks."""
    body = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in header]
    for row in body:
        for i, cell in enumerate(row):
            if i < len(widths):
                widths[i] = max(widths[i], len(cell))
            else:
                widths.append(len(cell))
    aligned_right = set(right)

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in aligned_right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(header)), *(line(row) for row in body)])


def total_jobs(summary: Mapping[str, Any]) -> int:
    """The experiment's jobs: its job list's length, else (a listing leaves the jobs out) its counts'."""
    jobs = summary.get("jobs")
    if isinstance(jobs, list):
        return len(jobs)
    counts = summary.get("counts") or {}
    return sum(int(counts.get(key) or 0) for key in COUNT_KEYS)


def finished_jobs(summary: Mapping[str, Any]) -> int:
    """The experiment's jobs with a final status."""
    counts = summary.get("counts") or {}
    return sum(int(counts.get(key) or 0) for key in FINAL_STATUSES)


def counts_text(counts: Mapping[str, Any] | None) -> str:
    """E.g. "3 succeeded, 1 running, 2 queued (1 waiting)"; the zero counts are left out.
    (``waiting`` jobs are queued ones held back by max_parallel: counted in ``queued`` too.)"""
    counts = counts or {}
    parts = [f"{counts[key]} {key}" for key in COUNT_KEYS if counts.get(key)]
    text = ", ".join(parts) or "no jobs"
    if counts.get("waiting"):
        text += f" ({counts['waiting']} waiting)"
    return text


def status_text(summary: Mapping[str, Any]) -> str:
    """The experiment's status, "running (cancel requested)" while a cancel is under way."""
    status = str(summary.get("status"))
    if summary.get("cancel_requested") and status not in FINAL_STATUSES:
        status += " (cancel requested)"
    return status


LIST_HEADER = ["ID", "NAME", "STATUS", "DONE", "JOBS", "BEST CELL", "CREATED"]


def list_rows(experiments: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """The rows of ``childtune experiments``: one per experiment, under :data:`LIST_HEADER`."""
    return [
        [
            str(exp.get("id")),
            str(exp.get("name") or "-"),
            status_text(exp),
            f"{finished_jobs(exp)}/{total_jobs(exp)}",
            counts_text(exp.get("counts")),
            str(exp.get("best_cell") or "-"),
            fmt_time(exp.get("created_at")),
        ]
        for exp in experiments
    ]


def _axis_headers(paths: Sequence[str]) -> list[str]:
    """Short column names of the axes (their last field), the full path where two would clash."""
    short = [path.rsplit(".", 1)[-1] for path in paths]
    return [s if short.count(s) == 1 else p for s, p in zip(short, paths, strict=True)]


def _value(value: Any) -> str:
    return "-" if value is None else str(value)


def _axis_paths(summary: Mapping[str, Any]) -> list[str]:
    paths = list(summary.get("axes") or {})
    for job in summary.get("jobs") or []:
        paths += [path for path in job.get("values") or {} if path not in paths]
    return paths


def job_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-job table of ``experiment status``: (header, rows), one column per axis, then
    status, phase, step/total, score and the error (its first line)."""
    paths = _axis_paths(summary)
    header = ["JOB", *(h.upper() for h in _axis_headers(paths)), "STATUS", "PHASE", "STEP", "SCORE", "ERROR"]
    rows = []
    for job in summary.get("jobs") or []:
        values = job.get("values") or {}
        total = job.get("total_steps")
        error = str(job.get("error") or "").strip().splitlines()
        rows.append(
            [
                str(job.get("id")),
                *(_value(values.get(path)) for path in paths),
                str(job.get("status")),
                str(job.get("phase") or "-"),
                f"{job.get('step') or 0}/{total or '?'}",
                fmt_number(job.get("score")),
                (error[0][:80] if error else ""),
            ]
        )
    return header, rows


def compare_header(summary: Mapping[str, Any]) -> str:
    """The line above the comparison: what is compared, how, and against which cells."""
    name = f" ({summary['name']})" if summary.get("name") else ""
    metric = summary.get("metric") or "main metric"
    better = "higher" if summary.get("higher_is_better", True) else "lower"
    baseline = summary.get("baseline")
    base = ", ".join(f"{k}={v!r}" for k, v in baseline.items()) if baseline else "none"
    seeds = summary.get("seed_axis") or "none"
    return (
        f"experiment {summary.get('id')}{name}: {status_text(summary)}; "
        f"metric {metric} ({summary.get('score') or 'final'} score of each job, {better} is better); "
        f"baseline {base}; seeds over {seeds}"
    )


COMPARE_HEADER = ["", "CELL", "N", "MEAN ± STD", "MIN", "MAX", "Δ VS BASELINE", "CI95", "VERDICT"]
COMPARE_RIGHT = (2, 3, 4, 5, 6, 7)


def _marker(cell: Mapping[str, Any], best: Any) -> str:
    marks = []
    if cell.get("baseline"):
        marks.append("baseline")
    if best is not None and cell.get("label") == best:
        marks.append("best")
    return ",".join(marks)


def _ci(vs: Mapping[str, Any]) -> list[Any]:
    ci = vs.get("ci95")
    return [ci[0], ci[1]] if isinstance(ci, list | tuple) and len(ci) == 2 else [None, None]


def compare_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """One row a cell under :data:`COMPARE_HEADER`: marker ("baseline", "best" or both), label,
    seeds scored, mean ± std, min, max, the mean difference with the baseline and its 95% CI,
    and the verdict. Scores have 4 decimals; what is not known shows "-"."""
    best = summary.get("best_cell")
    rows = []
    for cell in summary.get("cells") or []:
        mean, std = cell.get("mean"), cell.get("std")
        spread = fmt_number(mean) if std is None else f"{fmt_number(mean)} ± {fmt_number(std)}"
        vs = cell.get("vs_baseline")
        if vs:
            lo, hi = _ci(vs)
            delta = fmt_number(vs.get("mean_diff"), signed=True)
            ci = (
                "-"
                if lo is None or hi is None
                else f"[{fmt_number(lo, signed=True)}, {fmt_number(hi, signed=True)}]"
            )
            verdict = str(vs.get("verdict") or "-")
        else:
            delta = ci = verdict = "-"
        rows.append(
            [
                _marker(cell, best),
                str(cell.get("label")),
                str(cell.get("n") if cell.get("n") is not None else 0),
                spread,
                fmt_number(cell.get("min")),
                fmt_number(cell.get("max")),
                delta,
                ci,
                verdict,
            ]
        )
    return rows


COMPARE_CSV_HEADER = [
    "label",
    "baseline",
    "best",
    "n",
    "mean",
    "std",
    "min",
    "max",
    "mean_diff",
    "ci95_low",
    "ci95_high",
    "verdict",
]


def _raw(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def compare_csv_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """The comparison for a spreadsheet: :data:`COMPARE_CSV_HEADER`, one row a cell, the numbers
    in full precision, the axis values as extra columns, empty where not known."""
    paths = [path for path in summary.get("axes") or {} if path != summary.get("seed_axis")]
    for cell in summary.get("cells") or []:
        paths += [path for path in cell.get("values") or {} if path not in paths]
    best = summary.get("best_cell")
    rows = []
    for cell in summary.get("cells") or []:
        vs = cell.get("vs_baseline") or {}
        lo, hi = _ci(vs)
        values = cell.get("values") or {}
        rows.append(
            [
                str(cell.get("label")),
                "yes" if cell.get("baseline") else "",
                "yes" if best is not None and cell.get("label") == best else "",
                _raw(cell.get("n")),
                *(_raw(cell.get(key)) for key in ("mean", "std", "min", "max")),
                _raw(vs.get("mean_diff")),
                _raw(lo),
                _raw(hi),
                str(vs.get("verdict") or ""),
                *(_raw(values.get(path)) for path in paths),
            ]
        )
    return [COMPARE_CSV_HEADER + paths, *rows]


def compare_csv(summary: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(compare_csv_rows(summary))
    return buffer.getvalue()


def _job_name(job: Mapping[str, Any]) -> str:
    values = job.get("values") or {}
    shown = ", ".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in values.items())
    return f"{job.get('id')} ({shown})" if shown else str(job.get("id"))


def running_text(jobs: Iterable[Mapping[str, Any]]) -> str:
    """The running jobs' steps, e.g. "job-1 (mode=vanilla, seed=42) 12/100; ..."."""
    parts = [
        f"{_job_name(job)} {job.get('step') or 0}/{job.get('total_steps') or '?'}"
        for job in jobs
        if job.get("status") == "running"
    ]
    return "; ".join(parts)


def bar_postfix(summary: Mapping[str, Any]) -> str:
    """The short text beside the bar of finished jobs: the running jobs' steps, else the counts,
    e.g. "running 12/40 30/40, 3 queued (1 waiting)"."""
    steps = [
        f"{job.get('step') or 0}/{job.get('total_steps') or '?'}"
        for job in summary.get("jobs") or []
        if job.get("status") == "running"
    ]
    if not steps:
        return counts_text(summary.get("counts"))
    counts = summary.get("counts") or {}
    text = "running " + " ".join(steps)
    if counts.get("queued"):
        text += f", {counts['queued']} queued"
        if counts.get("waiting"):
            text += f" ({counts['waiting']} waiting)"
    return text


def job_changes(before: Mapping[str, Mapping[str, Any]], jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """A line for each job whose status changed since ``before`` (id -> job): started, finished
    with its score, failed with its error."""
    lines = []
    for job in jobs:
        status = job.get("status")
        old = before.get(str(job.get("id")))
        if status == (old or {}).get("status") or (old is None and status == "queued"):
            continue
        if status == "succeeded":
            lines.append(f"{_job_name(job)}: succeeded, score {fmt_number(job.get('score'))}")
        elif status == "failed":
            error = str(job.get("error") or "").strip().splitlines()
            lines.append(f"{_job_name(job)}: failed" + (f": {error[0][:200]}" if error else ""))
        else:
            lines.append(f"{_job_name(job)}: {status}")
    return lines
