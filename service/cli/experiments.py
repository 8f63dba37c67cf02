"""The CLI of experiments: ``childtune experiments`` and ``childtune experiment submit|status|
compare|watch|cancel|plots``.

An experiment is a grid of ordinary jobs (modes x reserve_p x seeds, ...) whose scores are
compared, cell by cell over the seeds, with a baseline cell. Exit codes as the job commands:
0 ok, 1 the API said no or the experiment did not succeed, 2 usage. The tables are made by the
pure functions of :mod:`service.cli.tables` (:func:`~service.cli.tables.compare_rows`,
:func:`~service.cli.tables.job_rows`, ...) from the API's experiment summary; this module prints
them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from service.cli.client import Client, ClientError
from service.cli.common import command_parser, run_command
from service.cli.format import fmt_time
from service.cli.tables import (
    COMPARE_HEADER,
    COMPARE_RIGHT,
    LIST_HEADER,
    bar_postfix,
    compare_csv,
    compare_header,
    compare_rows,
    counts_text,
    finished_jobs,
    format_table,
    job_changes,
    job_rows,
    list_rows,
    running_text,
    status_text,
    total_jobs,
)
from service.core.contract.vocabulary import FINAL_STATUSES

__all__ = [
    "experiment_main",
    "experiments_main",
    "print_compare",
    "print_experiment_status",
    "watch_experiment",
]

# ----------------------------------------------------------------------------------- printing


def print_compare(summary: Mapping[str, Any], file: Any = None) -> None:
    out = file or sys.stdout
    print(compare_header(summary), file=out)
    rows = compare_rows(summary)
    if rows:
        print(format_table(COMPARE_HEADER, rows, COMPARE_RIGHT), file=out)
    else:
        print("no cells", file=out)


def print_experiment_status(summary: Mapping[str, Any], file: Any = None) -> None:
    out = file or sys.stdout
    name = f" ({summary['name']})" if summary.get("name") else ""
    print(f"experiment {summary.get('id')}{name}: {status_text(summary)}", file=out)
    print(
        f"  jobs: {finished_jobs(summary)}/{total_jobs(summary)} finished: "
        f"{counts_text(summary.get('counts'))}; at most {summary.get('max_parallel')} at once",
        file=out,
    )
    metric, best = summary.get("metric") or "main metric", summary.get("best_cell") or "-"
    print(f"  metric {metric} ({summary.get('score') or 'final'}), best cell: {best}", file=out)
    print(
        f"  created {fmt_time(summary.get('created_at'))}, finished {fmt_time(summary.get('finished_at'))}",
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
            total, done = total_jobs(summary), finished_jobs(summary)
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
            elif summary.get("status") in FINAL_STATUSES or time.monotonic() - logged_at >= log_every:
                logged_at = time.monotonic()
                say(f"jobs {done}/{total} finished" + (f"; running: {running}" if running else ""))
            if summary.get("status") in FINAL_STATUSES:
                return summary
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------- main


def experiments_main(argv: list[str]) -> int:
    p = command_parser("experiments", "List your experiments, newest first.")
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

    return run_command(a, body)


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
    jobs = total_jobs(summary)
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
    print(f"{summary['id']}: {status_text(summary)}; {counts_text(summary.get('counts'))}")
    return 0


def experiment_main(argv: list[str]) -> int:
    p = command_parser("experiment", "Submit, follow, compare or cancel an experiment (a grid of jobs).")
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

    return run_command(a, body)
