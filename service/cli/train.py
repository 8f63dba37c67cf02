"""``childtune train [SPEC] --ranks N [--job-dir DIR]``: run a job on this machine.

Writes ``job.json``, starts the ranks (``workers.launch.RankGroup``: in this process's group,
so Ctrl-C reaches them), shows live progress from the job's files, and on Ctrl-C stops them
(TERM, a grace period, then KILL). Given a job directory alone, it resumes that job.

The workers are imported inside :func:`main`: ``childtune submit`` and the rest of the CLI
never load them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.cli.progress import ProgressView
from service.core.contract import JobSpec, SpecError, load_spec
from service.core.jobdir import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    JOB_FILE,
    LAUNCHER_LOG,
    JsonlTail,
    atomic_write_text,
    read_status,
)

__all__ = ["main"]


def _prepare_job_dir(a: argparse.Namespace) -> tuple[Path, JobSpec]:
    """The job directory and its spec (written to its job.json): a new job from SPEC, or the job
    already in --job-dir."""
    existing: JobSpec | None = None
    if a.job_dir is not None and (a.job_dir / JOB_FILE).is_file():
        existing = load_spec(a.job_dir / JOB_FILE)
    if a.spec is None:
        if existing is None:
            raise SpecError(
                [("", "give a job spec (JSON or YAML), or --job-dir of an existing job to resume")]
            )
        spec = existing
    else:
        spec = load_spec(a.spec)
    # The overrides go into job.json: the launcher and the ranks read the resources from it alone.
    if a.ranks is not None or a.zero_stage is not None or a.device is not None:
        data = spec.model_dump(mode="json")
        if a.ranks is not None:
            data["resources"]["num_ranks"] = a.ranks
        if a.zero_stage is not None:
            data["resources"]["zero_stage"] = a.zero_stage
        if a.device is not None:
            data["resources"]["device"] = a.device
        spec = load_spec(data)
    if existing is not None and existing != spec:
        raise SpecError(
            [("", f"{a.job_dir} holds a different job; give another --job-dir, or no SPEC to resume it")]
        )
    job_dir = a.job_dir
    if job_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        job_dir = Path("runs") / f"job-{stamp}-{os.getpid()}"
    job_dir = job_dir.resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    if existing is None:
        atomic_write_text(job_dir / JOB_FILE, spec.model_dump_json(indent=2) + "\n")
    return job_dir, spec


def _summary(job_dir: Path, code: int, view: Any) -> str:
    lines = []
    status = read_status(job_dir)
    if code == EXIT_OK:
        last = view.last_eval or {}
        metrics = ", ".join(
            f"{k.removeprefix('eval_')} {v:.4f}"
            for k, v in last.items()
            if k.startswith("eval_") and isinstance(v, float)
        )
        lines.append(f"succeeded: {metrics}" if metrics else "succeeded")
        best = status.get("best") or {}
        if best:
            lines.append(
                f"best: {best.get('main_metric')} {best.get('main_value'):.4f} at step {best.get('step')}"
            )
        lines.append(f"model: {job_dir / 'model'}")
        if (job_dir / "best").is_dir():
            lines.append(f"best model: {job_dir / 'best'}")
    elif code == EXIT_INTERRUPTED:
        lines.append(
            f"interrupted at step {status.get('step')}; run `childtune train --job-dir {job_dir}` to resume"
        )
    else:
        lines.append(f"failed: {status.get('error') or 'see ' + str(job_dir / LAUNCHER_LOG)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="childtune train",
        description="Run a fine-tune job on this machine: N ranks (torchrun; CPU with gloo, or GPUs), "
        "with live progress. Ctrl-C stops it; run again with --job-dir to resume.",
    )
    ap.add_argument("spec", nargs="?", help="job spec file (JSON or YAML), as the REST API takes it")
    ap.add_argument("--ranks", type=int, default=None, help="ranks (overrides resources.num_ranks)")
    ap.add_argument("--zero-stage", type=int, default=None, help="overrides resources.zero_stage")
    ap.add_argument("--job-dir", type=Path, default=None, help="job directory (default: runs/job-<time>)")
    ap.add_argument(
        "--device", default=None, choices=("auto", "cpu", "cuda"), help="overrides resources.device"
    )
    ap.add_argument("--quiet", action="store_true", help="no progress, only the final summary")
    a = ap.parse_args(argv)
    try:
        job_dir, _spec = _prepare_job_dir(a)
    except SpecError as exc:
        print(f"childtune train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    view = ProgressView(sys.stderr)
    follower = JsonlTail(job_dir)
    follower.skip_existing()
    print(f"job directory: {job_dir}", file=sys.stderr)
    started = time.time()

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    from workers.launch import JobDirBusy, RankGroup, settle

    with (job_dir / LAUNCHER_LOG).open("ab") as log:
        try:
            group = RankGroup(job_dir, log=log)
        except JobDirBusy as exc:
            print(f"childtune train: {exc}", file=sys.stderr)
            return EXIT_FAILED
        try:
            while (code := group.poll()) is None:
                time.sleep(0.25)
                if not a.quiet:
                    for kind, record in follower.poll():
                        getattr(view, kind)(record)
        except KeyboardInterrupt:
            interrupted = True
            print("\nstopping at the next step (Ctrl-C again to kill now) ...", file=sys.stderr)
            try:
                code = group.stop()
            except KeyboardInterrupt:
                group.signal(signal.SIGKILL)
                code = group.wait()
    if not a.quiet:
        for kind, record in follower.poll():
            getattr(view, kind)(record)
    view.close()
    code = settle(job_dir, code, interrupted=interrupted, started=started)
    print(_summary(job_dir, code, view), file=sys.stderr)
    return code
