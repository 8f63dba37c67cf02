#!/usr/bin/env python3
"""Give this worker container a GPU set of its own, then run the worker.

The worker image's entry point: ``gpu_slots.py COMMAND [ARGS...]``. Docker hands GPUs to a
container, not to a replica: with ``docker compose up --scale worker=N`` every replica gets the
same devices. So each worker container sees all the host's GPUs and claims a set of them here,
one exclusive ``flock`` per GPU (keyed by the GPU's UUID) in a folder shared by every worker
container of the host (the ``gpu-slots`` volume). The locks stay held by the worker process
(their descriptors survive ``exec``) and the kernel drops them when it exits, however it exits:
nothing to clean up after a crash.

- The set size is the N of the worker's queue ``gpu-xN``: the command's ``--queues`` value, else
  ``$CHILDTUNE_QUEUES``, else ``gpu-x1``; the largest N when it lists several. Sets are
  aligned: GPUs 0-1, 2-3, ... for ``gpu-x2``.
- ``CUDA_VISIBLE_DEVICES`` already set (by the operator), or only ``cpu-xN`` queues: nothing is
  claimed, the command runs as it is.
- The claimed set is exported as ``CUDA_VISIBLE_DEVICES`` (indices in PCI bus order, with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, as ``nvidia-smi`` numbers them) for the worker and the
  training processes it launches.

Exit status 3 when no set can be had (too few GPUs, or all taken): the message says why.
Standard library only: it runs before anything of the project is imported.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

QUEUE_PATTERN = re.compile(r"(cpu|gpu)-x([1-9][0-9]*)")
DEFAULT_SLOTS_DIR = "/var/lib/childtune/gpu-slots"
EXIT_NO_GPUS = 3


class SlotError(Exception):
    """No GPU set for this worker; the message says why and what to do."""


def gpus_per_worker(queues: str) -> int:
    """GPUs one worker of these queues needs: the largest N of ``gpu-xN``, 0 for CPU queues."""
    names = [name.strip() for name in queues.split(",") if name.strip()]
    if not names:
        raise SlotError("CHILDTUNE_QUEUES is empty: name the worker's queues, e.g. gpu-x1")
    size = 0
    for name in names:
        match = QUEUE_PATTERN.fullmatch(name)
        if match is None:
            raise SlotError(
                f"queue {name!r} is not of the form cpu-xN or gpu-xN; set CUDA_VISIBLE_DEVICES "
                "to choose this worker's GPUs yourself"
            )
        if match.group(1) == "gpu":
            size = max(size, int(match.group(2)))
    return size


def visible_gpus() -> list[tuple[str, str]]:
    """(index, uuid) of every GPU this container sees, in ``nvidia-smi`` (PCI bus) order."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except FileNotFoundError as e:
        raise SlotError(
            "nvidia-smi not found: this container has no GPU. Run it with the NVIDIA container "
            "toolkit and a GPU reservation (capabilities gpu, utility), or serve cpu-xN queues"
        ) from e
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        stderr = getattr(e, "stderr", "") or ""
        raise SlotError(f"nvidia-smi failed: {stderr.strip() or e}") from e
    gpus = []
    for line in out.splitlines():
        if line.strip():
            index, uuid = (part.strip() for part in line.split(",", 1))
            gpus.append((index, uuid))
    return gpus


def queues_of(argv: list[str], env: Mapping[str, str]) -> str:
    """The queues the command will serve: its ``--queues`` value, else the environment's."""
    for i, arg in enumerate(argv):
        if arg == "--queues" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--queues="):
            return arg.partition("=")[2]
    return env.get("CHILDTUNE_QUEUES") or "gpu-x1"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim(gpus: list[tuple[str, str]], size: int, slots_dir: Path) -> tuple[list[str], list[int]]:
    """Lock the first free aligned set of ``size`` GPUs: (their indices, the lock descriptors)."""
    num_sets = len(gpus) // size
    if num_sets == 0:
        raise SlotError(f"a gpu-x{size} worker needs {size} GPUs; this container sees {len(gpus)}")
    slots_dir.mkdir(parents=True, exist_ok=True)
    for first in range(0, num_sets * size, size):
        chosen = gpus[first : first + size]
        fds: list[int] = []
        for _, uuid in chosen:
            fd = _try_lock(slots_dir / f"{uuid}.lock")
            if fd is None:
                break
            fds.append(fd)
        if len(fds) == size:
            return [index for index, _ in chosen], fds
        for fd in fds:
            os.close(fd)
    raise SlotError(
        f"all {num_sets} sets of {size} GPU(s) on this host are taken by other workers "
        f"(locks in {slots_dir}): scale the workers down to at most {num_sets}"
    )


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: gpu_slots.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    env = os.environ
    if not env.get("CUDA_VISIBLE_DEVICES"):
        try:
            size = gpus_per_worker(queues_of(argv, env))
            if size:
                slots_dir = Path(env.get("CHILDTUNE_GPU_SLOTS", DEFAULT_SLOTS_DIR))
                indices, fds = claim(visible_gpus(), size, slots_dir)
                for fd in fds:
                    os.set_inheritable(fd, True)
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
                env["CUDA_VISIBLE_DEVICES"] = ",".join(indices)
                print(f"gpu_slots: this worker has GPU(s) {env['CUDA_VISIBLE_DEVICES']}", file=sys.stderr)
        except SlotError as e:
            print(f"gpu_slots: {e}", file=sys.stderr)
            return EXIT_NO_GPUS
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"gpu_slots: cannot run {argv[0]!r}: {e}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
