"""The CLI client: ``childtune submit|jobs|status|watch|metrics|events|cancel|download|files``.

Each ``*_main(argv)`` parses its own arguments and returns an exit code (0 ok, 1 the API said
no or the job did not succeed, 2 usage). The API's URL and key come from ``--url``/``--key``,
else ``CHILDTUNE_API_URL``/``CHILDTUNE_API_KEY``, else the files ``childtune up`` writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from service.cli.client import Client
from service.cli.common import command_parser, run_command
from service.cli.format import data_text, fmt_number, fmt_time, samples_lines
from service.core.contract import MODES, PRECISIONS, PRESETS, STATUSES, TASK_TYPES, SpecError, load_spec
from service.core.contract.vocabulary import FINAL_STATUSES

__all__ = [
    "cancel_main",
    "download_main",
    "events_main",
    "files_main",
    "jobs_main",
    "metrics_main",
    "print_job_summary",
    "status_main",
    "submit_main",
    "watch_job",
    "watch_main",
]

# ------------------------------------------------------------------------------------ submit


def _spec_from_args(a: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if a.spec:
        spec = load_spec(a.spec).model_dump(mode="json", exclude_unset=True, by_alias=False)
    sections = {
        k: dict(spec.get(k) or {}) for k in ("dataset", "childtuning", "hyperparameters", "resources")
    }
    if a.model:
        spec["model"] = a.model
    spec.setdefault("model", "minilm-l6")
    data = sections["dataset"]
    if a.preset:
        data = {"preset": a.preset, **{k: v for k, v in data.items() if k.startswith("max_")}}
    for name in ("train_file", "eval_file", "text_column", "text_pair_column", "label_column", "task_type"):
        if getattr(a, name):
            data.pop("preset", None)
            data[name] = getattr(a, name)
    for name in ("max_train_examples", "max_eval_examples"):
        if getattr(a, name):
            data[name] = getattr(a, name)
    if not data:
        data = {"preset": "glue/rte"}
    sections["dataset"] = data
    flags = {
        "childtuning": {"mode": a.mode, "reserve_p": a.reserve_p},
        "hyperparameters": {
            "epochs": a.epochs,
            "max_steps": a.max_steps,
            "batch_size": a.batch_size,
            "learning_rate": a.lr,
            "seed": a.seed,
            "eval_every": a.eval_every,
            "max_seq_length": a.max_seq_length,
        },
        "resources": {
            "num_ranks": a.ranks,
            "nodes": a.nodes,
            "zero_stage": a.zero_stage,
            "precision": a.precision,
            "device": a.device,
        },
    }
    for section, values in flags.items():
        sections[section].update({k: v for k, v in values.items() if v is not None})
    if "num_gpus" in sections["resources"] and "num_ranks" in sections["resources"]:
        sections["resources"].pop("num_gpus")
    spec.update({k: v for k, v in sections.items() if v})
    return spec


def submit_main(argv: list[str]) -> int:
    p = command_parser("submit", "Submit a fine-tune job from a spec file (JSON/YAML) and/or flags.")
    p.add_argument("spec", nargs="?", help="job spec file; flags override its fields")
    p.add_argument(
        "--model",
        help='"minilm-l6" (default), "smollm2-135m" (a decoder, for causal-lm), a model of the '
        "service's model roots (its folder name), or one of your succeeded jobs (job-<id>, job-<id>/best)",
    )
    p.add_argument("--preset", choices=PRESETS)
    p.add_argument("--train-file", help="an uploaded file id, or a local file (uploaded first)")
    p.add_argument("--eval-file", help="an uploaded file id, or a local file (uploaded first)")
    p.add_argument("--text-column")
    p.add_argument("--text-pair-column")
    p.add_argument("--label-column")
    p.add_argument("--task-type", choices=TASK_TYPES)
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--max-eval-examples", type=int)
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--reserve-p", type=float)
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--ranks", type=int, help="training processes of the whole job (GPUs on cuda)")
    p.add_argument("--nodes", type=int, help="machines the job spans (each runs ranks / nodes ranks)")
    p.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3))
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--wait", action="store_true", help="watch the job until it ends")
    a = p.parse_args(argv)
    try:
        spec = _spec_from_args(a)
        load_spec(spec)  # the contract, checked here first for a quicker answer
    except SpecError as exc:
        print(f"invalid job spec: {exc}", file=sys.stderr)
        return 2

    def body(client: Client) -> int:
        data = spec["dataset"]
        for field in ("train_file", "eval_file"):
            ref = data.get(field)
            if ref and not ref.startswith("file-") and Path(ref).is_file():
                uploaded = client.upload_file(ref)
                print(f"uploaded {ref} as {uploaded['id']} ({uploaded['num_rows']} rows)", file=sys.stderr)
                data[field] = uploaded["id"]
        job = client.submit(spec)
        print(job["id"])
        if not a.wait:
            return 0
        final = watch_job(client, job["id"])
        print_job_summary(final)
        return 0 if final["status"] == "succeeded" else 1

    return run_command(a, body)


# ------------------------------------------------------------------------------ jobs, status


def jobs_main(argv: list[str]) -> int:
    p = command_parser("jobs", "List your jobs, newest first.")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--all", action="store_true", help="every page")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        jobs = list(client.iter_jobs(a.status)) if a.all else client.list_jobs(a.status, a.limit)["data"]
        if a.json:
            print(json.dumps(jobs, indent=2))
            return 0
        print(f"{'ID':<22} {'STATUS':<10} {'PHASE':<11} {'STEP':>11} {'MODE':<15} {'MODEL':<14} CREATED")
        for job in jobs:
            progress = job["progress"]
            step = f"{progress['step']}/{progress['total_steps'] or '?'}"
            mode = job["spec"].get("childtuning", {}).get("mode", "-")
            print(
                f"{job['id']:<22} {job['status']:<10} {job['phase'] or '-':<11} {step:>11} {mode:<15} "
                f"{str(job['spec'].get('model'))[:14]:<14} {fmt_time(job['created_at'])}"
            )
        return 0

    return run_command(a, body)


def print_job_summary(job: dict[str, Any], file: Any = None) -> None:
    out = file or sys.stdout
    progress = job["progress"]
    print(
        f"job {job['id']}: {job['status']}"
        + (
            f" ({job['phase']})"
            if job["status"] == "running" or (job.get("phase") or "").startswith("waiting")
            else ""
        ),
        file=out,
    )
    print(f"  progress: step {progress['step']}/{progress['total_steps'] or '?'}", file=out)
    for attempt in job.get("nodes") or []:
        machines = ", ".join(f"node {n['node']} {n['worker']} ({n['addr']})" for n in attempt["nodes"])
        print(f"  attempt {attempt['attempt']}: {machines}", file=out)
    train = (job.get("latest_metrics") or {}).get("train")
    if train:
        loss = fmt_number(train.get("loss"), significant=True)
        print(f"  latest train: step {train.get('step')} loss {loss}", file=out)
    for label, record in (
        ("latest eval", (job.get("latest_metrics") or {}).get("eval")),
        ("best eval", job.get("best_metrics")),
        ("final eval", job.get("final_metrics")),
    ):
        if record:
            metrics = ", ".join(
                f"{k[5:]} {fmt_number(v, significant=True)}"
                for k, v in record.items()
                if k.startswith("eval_")
            )
            print(f"  {label} (step {record.get('step')}): {metrics}", file=out)
    if job.get("error"):
        print(f"  error: {job['error']}", file=out)
    print(f"  created {fmt_time(job['created_at'])}, finished {fmt_time(job.get('finished_at'))}", file=out)


def _show_main(
    argv: list[str],
    prog: str,
    description: str,
    fetch: Callable[[Client, str], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
) -> int:
    """A command that prints one thing of a job: as text, or as the API's JSON with --json."""
    p = command_parser(prog, description)
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        found = fetch(client, a.job_id)
        if a.json:
            print(json.dumps(found, indent=2))
        else:
            show(found)
        return 0

    return run_command(a, body)


def status_main(argv: list[str]) -> int:
    return _show_main(argv, "status", "Show one job.", Client.get_job, print_job_summary)


# -------------------------------------------------------------------------------------- mask


def print_mask(summary: dict[str, Any], file: Any = None) -> None:
    """The child network: kept fraction per parameter and, once the job finished, the audit of
    the exported weights (changed fraction, elements that moved outside the child)."""
    out = file or sys.stdout
    kept = fmt_number(summary.get("kept_fraction"), significant=True)
    print(
        f"mask: {summary.get('mode')}, reserve_p {summary.get('reserve_p')}, filter "
        f"{summary.get('param_filter')!r}, kept {kept} of {summary.get('num_elements')} elements",
        file=out,
    )
    audit = summary.get("audit") or {}
    rows = audit.get("params") or {}
    width = max([len(n) for n in (summary.get("params") or {})] + [9])
    print(f"  {'parameter':<{width}}  {'kept':>7}  {'changed':>7}  {'outside':>8}", file=out)
    for name, info in (summary.get("params") or {}).items():
        row = rows.get(name) or {}
        kept = fmt_number(info.get("kept_fraction"), significant=True)
        changed = fmt_number(row.get("changed_fraction"), significant=True) if row else "-"
        outside = str(row.get("changed_outside", "-")) if row else "-"
        print(f"  {name:<{width}}  {kept:>7}  {changed:>7}  {outside:>8}", file=out)
    if audit:
        verdict = "only the child moved" if audit.get("child_only") else "elements outside the child moved"
        changed = fmt_number(audit.get("changed_fraction"), significant=True)
        kept = fmt_number(audit.get("kept_fraction"), significant=True)
        print(
            f"audit: changed {changed}, kept {kept}, "
            f"{audit.get('changed_outside')} outside the child: {verdict}",
            file=out,
        )
    else:
        print("audit: not yet (written when the job finishes)", file=out)


def mask_main(argv: list[str]) -> int:
    description = "Show a ChildTuning-D job's child network and the audit of its weights."
    return _show_main(argv, "mask", description, Client.mask, print_mask)


# ------------------------------------------------------------------------------------- watch


def watch_job(client: Client, job_id: str, interval: float = 1.0, file: Any = None) -> dict[str, Any]:
    """Feed every new metric and event record to a live progress view until the job ends."""
    from service.cli.progress import ProgressView

    view = ProgressView(file=file or sys.stderr)
    cursors = {"metrics": "0", "events": "0"}

    def drain() -> None:
        # Both streams' new records, shown in the order they were written (the bars and the
        # phase would jump about if all events came before the metrics of the same interval).
        fresh: list[tuple[float, int, Any, dict[str, Any]]] = []
        for which, fetch, show in (
            ("events", client.events, view.event),
            ("metrics", client.metrics, view.metric),
        ):
            while True:
                page = fetch(job_id, cursors[which])
                fresh.extend((float(r.get("time") or 0), len(fresh), show, r) for r in page["data"])
                cursors[which] = page["next_cursor"]
                if len(page["data"]) < 1000:
                    break
        for _, _, show, record in sorted(fresh, key=lambda item: item[:2]):
            show(record)

    try:
        while True:
            job = client.get_job(job_id)
            drain()
            if job["status"] in FINAL_STATUSES:
                drain()
                return job
            time.sleep(interval)
    finally:
        view.close()


def watch_main(argv: list[str]) -> int:
    p = command_parser("watch", "Follow a job with live progress bars until it ends.")
    p.add_argument("job_id")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        job = watch_job(client, a.job_id, a.interval)
        print_job_summary(job)
        return 0 if job["status"] == "succeeded" else 1

    return run_command(a, body)


# ---------------------------------------------------------------------------- metrics, events

_TRAIN_COLUMNS = ["step", "epoch", "loss", "lr", "grad_norm", "samples_per_second"]


def metrics_main(argv: list[str]) -> int:
    p = command_parser("metrics", "Print a job's metric records as a table or CSV.")
    p.add_argument("job_id")
    p.add_argument("--kind", choices=("train", "eval"), default=None, help="only train or eval records")
    p.add_argument("--csv", action="store_true", help="CSV with every field")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        records = [r for r in client.all_records(a.job_id, "metrics") if a.kind in (None, r.get("kind"))]
        for record in records:
            record.pop("cursor", None)
        columns: list[str] = []
        for record in records:
            columns += [k for k in record if k not in columns]
        if a.csv:
            writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
            return 0
        for kind in ("train", "eval"):
            rows = [r for r in records if r.get("kind") == kind]
            if not rows:
                continue
            cols = (
                _TRAIN_COLUMNS
                if kind == "train"
                else [
                    "step",
                    "epoch",
                    "eval_loss",
                    *sorted({k for r in rows for k in r if k.startswith("eval_") and k != "eval_loss"}),
                    "is_best",
                ]
            )
            print(f"{kind}:")
            print("  " + "  ".join(f"{c:>12}" for c in cols))
            for row in rows:
                print("  " + "  ".join(f"{fmt_number(row.get(c), significant=True):>12}" for c in cols))
        if not records:
            print("no metrics yet")
        return 0

    return run_command(a, body)


def events_main(argv: list[str]) -> int:
    p = command_parser("events", "Print a job's events.")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        for record in client.all_records(a.job_id, "events"):
            record.pop("cursor", None)
            if a.json:
                print(json.dumps(record))
                continue
            when = datetime.fromtimestamp(record.get("time", 0)).strftime("%H:%M:%S")
            kind = record.get("type", "?")
            if kind == "data":  # causal-lm: rows kept, truncated, dropped
                print(f"{when}  {kind:<10} {data_text(record)}")
                continue
            if kind == "samples":  # causal-lm: the greedy answers at an evaluation
                head, *lines = samples_lines(record)
                print(f"{when}  {kind:<10} {head.removeprefix('samples ')}")
                for line in lines:
                    print(" " * 21 + line)
                continue
            rest = {k: v for k, v in record.items() if k not in ("time", "type")}
            print(f"{when}  {kind:<10} {json.dumps(rest)}")
        return 0

    return run_command(a, body)


# ----------------------------------------------------------------------- cancel, download, files


def cancel_main(argv: list[str]) -> int:
    p = command_parser("cancel", "Cancel a queued or running job.")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="wait until the job has stopped")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        job = client.cancel(a.job_id)
        while a.wait and job["status"] not in FINAL_STATUSES:
            time.sleep(0.5)
            job = client.get_job(a.job_id)
        print(f"{job['id']}: {job['status']}" + (" (cancel requested)" if job["status"] == "running" else ""))
        return 0

    return run_command(a, body)


def download_main(argv: list[str]) -> int:
    p = command_parser("download", "Download a job's model (or another checkpoint) into a folder.")
    p.add_argument("job_id")
    p.add_argument(
        "--name",
        default="model",
        help='"model" (default), "best", "delta" (a strict child), or a checkpoint like step-00000012',
    )
    p.add_argument("--to", type=Path, default=None, help="destination folder (default ./<job>-<name>)")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        dest = client.download(a.job_id, a.name, a.to or Path(f"{a.job_id}-{a.name}"))
        print(dest)
        return 0

    return run_command(a, body)


def files_main(argv: list[str]) -> int:
    p = command_parser("files", "Upload, list, show or delete dataset files (csv, tsv, jsonl).")
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("upload", help="upload a file")
    up.add_argument("path", type=Path)
    up.add_argument("--format", choices=("csv", "tsv", "jsonl"))
    sub.add_parser("list", help="list your files")
    show = sub.add_parser("show", help="show one file")
    show.add_argument("file_id")
    rm = sub.add_parser("delete", help="delete a file")
    rm.add_argument("file_id")
    a = p.parse_args(argv)

    def body(client: Client) -> int:
        if a.action == "upload":
            record = client.upload_file(a.path, a.format)
            print(f"{record['id']}  {record['num_rows']} rows, columns: {', '.join(record['columns'])}")
        elif a.action == "list":
            for f in client.list_files():
                print(f"{f['id']}  {f['format']:<5} {f['num_rows']:>8} rows  {f['filename']}")
        elif a.action == "show":
            print(json.dumps(client.get_file(a.file_id), indent=2))
        else:
            client.delete_file(a.file_id)
            print(f"deleted {a.file_id}")
        return 0

    return run_command(a, body)
