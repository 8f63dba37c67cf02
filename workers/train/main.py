"""``python -m workers.train --job-dir DIR``: one rank of a job.

The job file (``DIR/job.json``) is the one source of what the job is, its number of ranks and its
device included (``resources``). The environment says only who this process is: ``RANK`` of
``WORLD_SIZE`` (torchrun's and DeepSpeed's names, set by ``workers.launch`` or DeepSpeed's
launcher). A process started by hand, without them, is rank 0 of 1. A ``WORLD_SIZE`` other than
the job file's ``resources.num_ranks`` is refused (exit code 2), never used.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from service.core import env
from service.core.contract import SpecError, load_spec
from service.core.jobdir import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    JOB_FILE,
    MODEL_DIR,
    read_status,
    write_status,
)
from service.core.procs import die_with_parent, rendezvous_port
from workers.train.program import Run

__all__ = ["main", "rank_identity"]

log = logging.getLogger("childtune.train")


def rank_identity() -> tuple[int, int]:
    """(``RANK``, ``WORLD_SIZE``) of this process; a process started by hand, without a launcher,
    is rank 0 of 1 and gets the rest of the rendezvous environment here."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(rendezvous_port()))
    return rank, world


def _die_with_torchrun() -> None:
    """Under torchrun (a multi-node job's node; ``DIE_WITH_TORCHRUN``), which starts each rank in
    a session of its own: SIGKILL when torchrun dies, however it dies. A torchrun already gone
    when this runs (this process was re-parented) means exit now."""
    if os.environ.get(env.DIE_WITH_TORCHRUN) != "1":
        return
    parent = os.getppid()
    die_with_parent(signal.SIGKILL)
    try:
        cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if os.getppid() != parent or b"torch.distributed" not in cmdline:
        print("error: torchrun is gone; this rank stops", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED)


def _quiet_libraries() -> None:
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # ChildTuning's fused step replaces optimizer.step(); torch's scheduler then warns about the order.
    warnings.filterwarnings("ignore", message="Seems like `optimizer.step\\(\\)` has been overridden")
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor` is deprecated")


def _refuse(job_dir: Path, rank: int, message: str, *, where: str = "") -> int:
    """A usage error before the run starts: rank 0 records it in ``status.json``."""
    if rank == 0:
        write_status(job_dir, status="failed", phase="preparing", step=0, error=message)
    print(f"error: {where}{message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.train", description=__doc__.split("\n")[0])
    ap.add_argument("--job-dir", required=True, type=Path, help="the job's directory (holds job.json)")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    _die_with_torchrun()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s rank" + os.environ.get("RANK", "0") + " %(levelname)s %(message)s",
    )
    _quiet_libraries()
    job_dir: Path = args.job_dir.resolve()
    rank, world = rank_identity()
    job_file = job_dir / JOB_FILE
    if not job_file.is_file():
        print(f"error: {job_file} not found", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = load_spec(job_file)
    except SpecError as exc:
        return _refuse(job_dir, rank, str(exc), where=f"{job_file}: ")
    if spec.resources.num_ranks != world:
        return _refuse(
            job_dir,
            rank,
            f"resources.num_ranks: {JOB_FILE} asks for {spec.resources.num_ranks} ranks but this process "
            f"was started as one of WORLD_SIZE={world}; start as many ranks as the job file says",
        )
    previous = read_status(job_dir)
    if previous.get("status") == "succeeded" and (job_dir / MODEL_DIR / "config.json").is_file():
        log.info("job %s already succeeded; nothing to do", job_dir.name)
        return EXIT_OK
    return Run(job_dir, spec, rank).execute()
