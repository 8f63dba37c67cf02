"""The CLI of experiments: ``childtune experiments`` and ``childtune experiment submit|status|
compare|watch|cancel|plots``.

An experiment is a grid of ordinary jobs (modes x reserve_p x seeds, ...) whose scores are
compared, cell by cell over the seeds, with a baseline cell. Exit codes as the job commands:
0 ok, 1 the API said no or the experiment did not succeed, 2 usage. The tables are made by pure
functions (:func:`compare_rows`, :func:`job_rows`, :func:`format_table`, ...) of the API's
experiment summary, so they can be checked without a server.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from service.cli.client import Client, ClientError
from service.cli.commands import FINAL, _parser, _run, _when

__all__ = [
    "COMPARE_CSV_HEADER",
    "COMPARE_HEADER",
    "bar_postfix",
    "compare_csv",
    "compare_csv_rows",
    "compare_header",
    "compare_rows",
    "counts_text",
    "experiment_main",
    "experiments_main",
    "format_table",
    "job_changes",
    "job_rows",
    "list_rows",
    "print_compare",
    "print_experiment_status",
    "running_text",
    "watch_experiment",
]

COUNT_KEYS = ("succeeded", "failed", "cancelled", "running", "queued")


# ------------------------------------------------------------------------------ pure formatting


def fmt_score(value: Any, signed: bool = False) -> str:
    """A score with 4 decimals ("+" in front of a positive difference with ``signed``); None: "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:+.4f}" if signed else f"{value:.4f}"


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


def _total(summary: Mapping[str, Any]) -> int:
    jobs = summary.get("jobs")
    if isinstance(jobs, list):
        return len(jobs)
    counts = summary.get("counts") or {}
    return sum(int(counts.get(key) or 0) for key in COUNT_KEYS)


def _finished(summary: Mapping[str, Any]) -> int:
    counts = summary.get("counts") or {}
    return sum(int(counts.get(key) or 0) for key in FINAL)


def counts_text(counts: Mapping[str, Any] | None) -> str:
    """E.g. "3 succeeded, 1 running, 2 queued (1 waiting)"; the zero counts are left out.
    (``waiting`` jobs are queued ones held back by max_parallel: counted in ``queued`` too.)"""
    counts = counts or {}
    parts = [f"{counts[key]} {key}" for key in COUNT_KEYS if counts.get(key)]
    text = ", ".join(parts) or "no jobs"
    if counts.get("waiting"):
        text += f" ({counts['waiting']} waiting)"
    return text


def _status_text(summary: Mapping[str, Any]) -> str:
    status = str(summary.get("status"))
    if summary.get("cancel_requested") and status not in FINAL:
        status += " (cancel requested)"
    return status


LIST_HEADER = ["ID", "NAME", "STATUS", "DONE", "JOBS", "BEST CELL", "CREATED"]


def list_rows(experiments: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """The rows of ``childtune experiments``: one per experiment, under :data:`LIST_HEADER`."""
    return [
        [
            str(exp.get("id")),
            str(exp.get("name") or "-"),
            _status_text(exp),
            f"{_finished(exp)}/{_total(exp)}",
            counts_text(exp.get("counts")),
            str(exp.get("best_cell") or "-"),
            _when(exp.get("created_at")),
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
                fmt_score(job.get("score")),
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
        f"experiment {summary.get('id')}{name}: {_status_text(summary)}; "
        f"metric {metric} ({summary.get('score') or 'final'} score of each job, {better} is better); "
        f"baseline {base}; seeds over {seeds}"
    )


COMPARE_HEADER = ["", "CELL", "N", "MEAN ± STD", "MIN", "MAX", "Δ VS BASELINE", "CI95", "VERDICT"]
_COMPARE_RIGHT = (2, 3, 4, 5, 6, 7)


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
        spread = fmt_score(mean) if std is None else f"{fmt_score(mean)} ± {fmt_score(std)}"
        vs = cell.get("vs_baseline")
        if vs:
            lo, hi = _ci(vs)
            delta = fmt_score(vs.get("mean_diff"), signed=True)
            ci = "-" if lo is None or hi is None else f"[{fmt_score(lo, True)}, {fmt_score(hi, True)}]"
            verdict = str(vs.get("verdict") or "-")
        else:
            delta = ci = verdict = "-"
        rows.append(
            [
                _marker(cell, best),
                str(cell.get("label")),
                str(cell.get("n") if cell.get("n") is not None else 0),
                spread,
                fmt_score(cell.get("min")),
                fmt_score(cell.get("max")),
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
            lines.append(f"{_job_name(job)}: succeeded, score {fmt_score(job.get('score'))}")
        elif status == "failed":
            error = str(job.get("error") or "").strip().splitlines()
            lines.append(f"{_job_name(job)}: failed" + (f": {error[0][:200]}" if error else ""))
        else:
            lines.append(f"{_job_name(job)}: {status}")
    return lines


# ----------------------------------------------------------------------------------- printing


def print_compare(summary: Mapping[str, Any], file: Any = None) -> None:
    out = file or sys.stdout
    print(compare_header(summary), file=out)
    rows = compare_rows(summary)
    if rows:
        print(format_table(COMPARE_HEADER, rows, _COMPARE_RIGHT), file=out)
    else:
        print("no cells", file=out)


def print_experiment_status(summary: Mapping[str, Any], file: Any = None) -> None:
    out = file or sys.stdout
    name = f" ({summary['name']})" if summary.get("name") else ""
    print(f"experiment {summary.get('id')}{name}: {_status_text(summary)}", file=out)
    print(
        f"  jobs: {_finished(summary)}/{_total(summary)} finished: {counts_text(summary.get('counts'))}; "
        f"at most {summary.get('max_parallel')} at once",
        file=out,
    )
    metric, best = summary.get("metric") or "main metric", summary.get("best_cell") or "-"
    print(f"  metric {metric} ({summary.get('score') or 'final'}), best cell: {best}", file=out)
    print(
        f"  created {_when(summary.get('created_at'))}, finished {_when(summary.get('finished_at'))}",
        file=out,
    )
    header, rows = job_rows(summary)
    if rows:
        print(format_table(header, rows, (len(header) - 3, len(header) - 2)), file=out)


# -------------------------------------------------------------------------------------- watch


def watch_experiment(
    client: Client,
    experiment_id: str,
    interval: float = 2.0,
    file: Any = None,
    *,
    interactive: bool | None = None,
    log_every: float = 30.0,
) -> dict[str, Any]:
    """Poll the experiment until it ends. On a terminal: a bar of finished/total jobs with the
    running jobs' steps; elsewhere a line per job status change and a progress line every
    ``log_every`` seconds. Returns the final summary."""
    from tqdm import tqdm

    out = file or sys.stderr
    if interactive is None:
        interactive = bool(getattr(out, "isatty", lambda: False)())
    bar: Any = None
    known: dict[str, Mapping[str, Any]] = {}
    logged_at = float("-inf")  # the first poll logs at once

    def say(text: str) -> None:
        if bar is not None:
            bar.write(text, file=out)
        else:
            print(text, file=out, flush=True)

    try:
        while True:
            summary = client.get_experiment(experiment_id)
            jobs = list(summary.get("jobs") or [])
            for line in job_changes(known, jobs):
                say(line)
            known = {str(job.get("id")): job for job in jobs}
            total, done = _total(summary), _finished(summary)
            running = running_text(jobs)
            if interactive:
                if bar is None:
                    bar = tqdm(
                        total=total,
                        initial=done,
                        desc="jobs",
                        unit="job",
                        file=out,
                        dynamic_ncols=True,
                        leave=True,
                    )
                bar.total = total
                bar.set_postfix_str(bar_postfix(summary), refresh=False)
                bar.update(max(0, done - bar.n))
                bar.refresh()
            elif summary.get("status") in FINAL or time.monotonic() - logged_at >= log_every:
                logged_at = time.monotonic()
                say(f"jobs {done}/{total} finished" + (f"; running: {running}" if running else ""))
            if summary.get("status") in FINAL:
                return summary
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------- main


def experiments_main(argv: list[str]) -> int:
    p = _parser("experiments", "List your experiments, newest first.")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--all", action="store_true", help="every page")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        found = list(client.iter_experiments()) if a.all else client.list_experiments(a.limit)["data"]
        if a.json:
            print(json.dumps(found, indent=2))
        elif found:
            print(format_table(LIST_HEADER, list_rows(found), (3,)))
        else:
            print("no experiments")
        return 0

    return _run(a, body)


def _load_experiment_file(path: Path) -> dict[str, Any]:
    """The spec in a YAML or JSON file; ValueError says what is wrong with it."""
    try:
        with path.open() as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping (base, axes, baseline, ...)")
    return data


def _submit(client: Client, a: argparse.Namespace) -> int:
    try:
        spec = _load_experiment_file(a.file)
    except ValueError as exc:
        print(f"invalid experiment spec: {exc}", file=sys.stderr)
        return 2
    base = spec.get("base")
    data = base.get("dataset") if isinstance(base, dict) else None
    if not isinstance(data, dict):
        data = {}
    # the base's local dataset files are uploaded first, as `childtune submit` does
    for field in ("train_file", "eval_file"):
        ref = data.get(field)
        if isinstance(ref, str) and not ref.startswith("file-") and Path(ref).is_file():
            uploaded = client.upload_file(ref)
            print(f"uploaded {ref} as {uploaded['id']} ({uploaded['num_rows']} rows)", file=sys.stderr)
            data[field] = uploaded["id"]
    try:
        summary = client.submit_experiment(spec)
    except ClientError as exc:
        if exc.status != 422:
            raise
        # the API's message may name its field(s) already ("cell [...]: why; ...")
        where = f"{exc.field}: " if exc.field and not exc.message.startswith(exc.field) else ""
        print(f"invalid experiment spec: {where}{exc.message}", file=sys.stderr)
        return 1
    if a.json and not a.watch:
        print(json.dumps(summary, indent=2))
        return 0
    print(summary["id"])
    jobs = _total(summary)
    print(
        f"{jobs} job{'s' if jobs != 1 else ''} in {len(summary.get('cells') or [])} cell(s), "
        f"at most {summary.get('max_parallel')} at once",
        file=sys.stderr,
    )
    if not a.watch:
        return 0
    return _finish_watch(client, summary["id"], a.interval, a.json)


def _finish_watch(client: Client, experiment_id: str, interval: float, as_json: bool = False) -> int:
    summary = watch_experiment(client, experiment_id, interval)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_compare(summary)
    return 0 if summary.get("status") == "succeeded" else 1


def _plots(client: Client, a: argparse.Namespace) -> int:
    plots = client.experiment_plots(a.experiment_id)
    if not plots:
        print(f"{a.experiment_id}: no plots yet", file=sys.stderr)
        return 0
    out_dir = a.out or Path(f"{a.experiment_id}-plots")
    for plot in plots:
        name = str(plot["name"])
        print(client.download_plot(a.experiment_id, name, out_dir / Path(name).name))
    return 0


def _cancel(client: Client, a: argparse.Namespace) -> int:
    summary = client.cancel_experiment(a.experiment_id)
    print(f"{summary['id']}: {_status_text(summary)}; {counts_text(summary.get('counts'))}")
    return 0


def experiment_main(argv: list[str]) -> int:
    p = _parser("experiment", "Submit, follow, compare or cancel an experiment (a grid of jobs).")
    # --url/--key also after the subcommand; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="API URL")
    common.add_argument("--key", default=argparse.SUPPRESS, help="API key")
    sub = p.add_subparsers(dest="action", required=True, metavar="SUBCOMMAND")

    submit = sub.add_parser("submit", parents=[common], help="submit an experiment spec (YAML or JSON)")
    submit.add_argument("file", type=Path, help="experiment spec: base, axes, baseline, metric, score, ...")
    submit.add_argument("--watch", action="store_true", help="follow it until it ends, then compare")
    submit.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --watch")
    submit.add_argument("--json", action="store_true", help="print the API's summary")

    status = sub.add_parser("status", parents=[common], help="its status and every job")
    status.add_argument("experiment_id")
    status.add_argument("--json", action="store_true")

    compare = sub.add_parser("compare", parents=[common], help="each cell's scores against the baseline")
    compare.add_argument("experiment_id")
    fmt = compare.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the comparison as JSON")
    fmt.add_argument("--csv", action="store_true", help="the comparison as CSV")

    watch = sub.add_parser("watch", parents=[common], help="follow it until it ends, then compare")
    watch.add_argument("experiment_id")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between polls")

    cancel = sub.add_parser("cancel", parents=[common], help="cancel every job of it")
    cancel.add_argument("experiment_id")

    plots = sub.add_parser("plots", parents=[common], help="download its plots (PNG)")
    plots.add_argument("experiment_id")
    plots.add_argument("--out", type=Path, default=None, help="folder (default ./<id>-plots)")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        if a.action == "submit":
            return _submit(client, a)
        if a.action == "watch":
            return _finish_watch(client, a.experiment_id, a.interval)
        if a.action == "cancel":
            return _cancel(client, a)
        if a.action == "plots":
            return _plots(client, a)
        summary = client.get_experiment(a.experiment_id)
        if a.action == "status":
            if a.json:
                print(json.dumps(summary, indent=2))
            else:
                print_experiment_status(summary)
        elif a.json:
            keys = ("id", "name", "status", "metric", "score", "higher_is_better", "seed_axis", "baseline")
            shown = {key: summary.get(key) for key in keys}
            shown.update(best_cell=summary.get("best_cell"), cells=summary.get("cells"))
            print(json.dumps(shown, indent=2))
        elif a.csv:
            sys.stdout.write(compare_csv(summary))
        else:
            print_compare(summary)
        return 0

    return _run(a, body)
