"""Launching a job's ranks on this machine.

- :func:`launch_command` is the argv a worker runs for a job: ``python -m workers.launch
  --job-dir DIR``, a small supervisor that starts N ranks of ``python -m workers.train`` (a
  :class:`RankGroup`: the torchrun environment, but every rank stays in the supervisor's
  process group), waits, and exits with the job's code (0 succeeded, 1 failed, 2 usage, 75
  interrupted; see ``docs/job-directory.md``). Start it with ``start_new_session=True`` and
  stop it by signalling its process group: TERM lets every rank stop at its next step
  boundary, KILL ends them all at once.
- The number of ranks and the device come from the job file (``job.json``'s ``resources``,
  :func:`job_resources`), as they do for the ranks themselves; each rank is told only who it
  is (``RANK``, ``WORLD_SIZE``, ...).
- A multi-node job (``resources.nodes`` > 1) runs one supervisor per machine, each given its
  node's place (``--nnodes --node --rdzv-endpoint --rdzv-id --local-addr``): it starts
  ``torchrun`` (:class:`TorchrunNode`, torch elastic with the c10d rendezvous hosted by node 0)
  for that machine's ``num_ranks / nodes`` ranks. One machine's job keeps :class:`RankGroup`:
  the same ranks and environment without torchrun's agent (docs/architecture.md says why).
- ``childtune train`` (``service/cli/train.py``) runs a :class:`RankGroup` in the foreground
  with live progress, and :func:`settle` to finish its ``status.json``.

This module imports neither torch nor the service's web stack.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from service.core import env as names
from service.core.contract import Resources, SpecError, load_spec
from service.core.jobdir import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    JOB_FILE,
    LAUNCHER_LOG,
    LOCK_FILE,
    read_status,
    write_status,
)
from service.core.procs import die_with_parent, rendezvous_port

REPO_ROOT = Path(__file__).resolve().parents[1]
GRACE_SECONDS = 20.0
# How long a new run waits for an earlier run's processes to let go of the directory.
LOCK_WAIT_S = 120.0


class JobDirBusy(RuntimeError):
    """Another run of the job still holds its directory."""


def lock_job_dir(job_dir: Path, wait_s: float = LOCK_WAIT_S, *, name: str = LOCK_FILE) -> int:
    """An open file descriptor holding the exclusive lock of ``job_dir``.

    Processes started with the descriptor (``pass_fds``) share the lock, which is released only
    when the last of them exits, however it exits. An earlier run of the same job (ranks still
    stopping after their supervisor died) therefore keeps a new run out until it is gone: this
    waits up to ``wait_s`` for it, then raises :class:`JobDirBusy`.
    """
    import fcntl

    fd = os.open(job_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise JobDirBusy(
                    f"another run of this job still holds {job_dir} after {wait_s:.0f} s"
                ) from None
            time.sleep(0.2)


def job_resources(job_dir: Path) -> Resources:
    """The job's ``resources`` (number of ranks, device, ...) from its ``job.json``: the one place
    the launcher and the ranks read them. Raises :class:`SpecError` when the file is missing or
    invalid."""
    return load_spec(job_dir / JOB_FILE).resources


def launch_command(job_dir: str | Path, *, node: NodeSpec | None = None) -> list[str]:
    """The argv that runs a job's ranks under a supervisor (see the module docstring); with
    ``node``, this machine's part of a multi-node job."""
    argv = [sys.executable, "-m", "workers.launch", "--job-dir", str(job_dir)]
    if node is not None:
        argv += [
            "--nnodes", str(node.nnodes), "--node", str(node.node), "--rdzv-endpoint", node.endpoint,
            "--rdzv-id", node.rdzv_id, "--local-addr", node.local_addr, "--rdzv-timeout", str(node.timeout_s),
        ]  # fmt: skip
    return argv


def rank_env(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The ranks' environment for a job on ``device`` (``resources.device``), from ``base``
    (default: this process's): the repository on the path; on CPU, DeepSpeed's CPU accelerator
    and no visible GPU."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        extensions = extensions_dir()
        if extensions is not None:
            env.setdefault(names.TORCH_EXTENSIONS, str(extensions))
    return env


def extensions_dir() -> Path | None:
    """Where this Python environment's torch extensions are built (see ``names.TORCH_EXTENSIONS``):
    inside the environment where it can be written, else None (torch's default, ~/.cache)."""
    prefix = Path(sys.prefix)
    return prefix / "torch_extensions" if os.access(prefix, os.W_OK) else None


def build_cpu_comm_op() -> str:
    """Compile DeepSpeed's CPU shared-memory comm op where CPU ranks will look for it (``make
    setup`` runs this once, so a first job does not spend its start compiling). Returns what
    happened, in words."""
    env = rank_env("cpu", {})
    for name in ("DS_ACCELERATOR", names.TORCH_EXTENSIONS):
        if name in env:
            os.environ[name] = env[name]
    from deepspeed.comm.torch import build_shm_op

    op = build_shm_op()
    where = os.environ.get(names.TORCH_EXTENSIONS, "torch's default folder")
    if op is None:
        return "DeepSpeed builds no CPU comm op here"
    return f"DeepSpeed's CPU comm op ready in {where}"


def cpu_threads(env: dict[str, str], num_ranks: int) -> int:
    """Threads for each rank of a CPU job: the job's budget split over its ``num_ranks`` ranks.

    The budget is ``OMP_NUM_THREADS`` when it is a positive integer (a worker running N jobs at
    once sets it to cores // N), else every core of the machine.
    """
    raw = env.get(names.CPU_THREADS, "").strip()
    budget = int(raw) if raw.isdigit() and int(raw) > 0 else (os.cpu_count() or 1)
    return max(1, budget // max(1, num_ranks))


def _die_with_parent() -> None:
    """In a rank, before exec: SIGKILL when the launcher dies, however it dies."""
    die_with_parent(signal.SIGKILL)


class _Launched:
    """What :class:`RankGroup` and :class:`TorchrunNode` share: their child processes
    (``procs``), a stop that TERMs them now and KILLs what is left after a grace period, and
    waiting for the exit code :meth:`poll` gives."""

    procs: list[subprocess.Popen[bytes]]
    _stop_at: float | None = None

    def poll(self) -> int | None:  # pragma: no cover - each kind has its own
        raise NotImplementedError

    def request_stop(self, grace: float = GRACE_SECONDS) -> None:
        """TERM every child (a rank stops at its next step boundary); :meth:`poll` sends KILL
        to what is left once ``grace`` seconds have passed. Safe in a signal handler."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + grace
        self.signal(signal.SIGTERM)

    def _kill_if_overdue(self) -> None:
        if self._stop_at is not None and time.monotonic() > self._stop_at:
            self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("ranks", timeout or 0)
            time.sleep(0.1)
        return code

    def stop(self, grace: float = GRACE_SECONDS) -> int:
        """TERM every child, KILL what is left after ``grace``; returns the exit code."""
        self.request_stop(grace)
        return self.wait()


class RankGroup(_Launched):
    """N local ranks of ``python -m workers.train``, children of this process, in its process group.

    N and the device are the job file's (:func:`job_resources`); ``env`` (default: this
    process's) is the environment the ranks start from.

    Unlike torchrun, which starts every rank in a session of its own, the ranks stay in the
    launcher's process group: a TERM or KILL sent to the group reaches each of them, and a rank
    whose launcher dies is killed with it. When a rank fails, the others (stuck, most likely,
    in a collective with it) get TERM, then KILL after the grace period.
    """

    def __init__(self, job_dir: Path, *, env: dict[str, str] | None = None, log: Any = None) -> None:
        resources = job_resources(job_dir)
        num_ranks = resources.num_ranks
        env = rank_env(resources.device, env)
        self.lock_fd = lock_job_dir(job_dir)
        port = str(rendezvous_port())
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop_at: float | None = None
        for rank in range(num_ranks):
            rank_env_ = {
                **env,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(num_ranks),
                "LOCAL_WORLD_SIZE": str(num_ranks),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            }
            if env.get("DS_ACCELERATOR") == "cpu":
                rank_env_[names.CPU_THREADS] = str(cpu_threads(env, num_ranks))
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "workers.train", "--job-dir", str(job_dir)],
                    env=rank_env_,
                    stdout=log,
                    stderr=subprocess.STDOUT if log is not None else None,
                    preexec_fn=_die_with_parent,
                    pass_fds=(self.lock_fd,),
                )
            )

    def poll(self) -> int | None:
        """The group's exit code once every rank has ended, else None (and reaps a failed group)."""
        codes = [p.poll() for p in self.procs]
        if None in codes:
            self._kill_if_overdue()
        if (
            self._stop_at is None
            and None in codes
            and any(c not in (None, 0, EXIT_INTERRUPTED) for c in codes)
        ):
            self.request_stop()  # a rank failed: the others are likely stuck in a collective with it
        if None in codes:
            return None
        done = [c for c in codes if c is not None]
        if all(c == 0 for c in done):
            return EXIT_OK
        if all(c in (0, EXIT_INTERRUPTED) for c in done):
            return EXIT_INTERRUPTED
        return next((c for c in done if c not in (0, EXIT_INTERRUPTED) and c > 0), EXIT_FAILED)


class NodeSpec(NamedTuple):
    """This machine's part of a job across ``nnodes`` machines (``resources.nodes``): node
    ``node`` of the gang, meeting the others at torchrun's c10d rendezvous ``endpoint``
    (``host:port``, hosted by node 0) under ``rdzv_id`` (the job and its attempt)."""

    nnodes: int
    node: int
    endpoint: str
    rdzv_id: str
    local_addr: str
    timeout_s: float = 120.0


def torchrun_command(job_dir: Path, node: NodeSpec, ranks_per_node: int) -> list[str]:
    """torch elastic's launcher for this node's ``ranks_per_node`` ranks (c10d rendezvous; no
    restarts: a failed attempt is the service's to retry, from the last checkpoint)."""
    conf = f"is_host={'true' if node.node == 0 else 'false'},join_timeout={int(node.timeout_s)}"
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(node.nnodes), "--nproc-per-node", str(ranks_per_node),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", node.endpoint, "--rdzv-id", node.rdzv_id,
        "--rdzv-conf", conf, "--local-addr", node.local_addr,
        "--max-restarts", "0", "--monitor-interval", "0.5",
        "-m", "workers.train", "--job-dir", str(job_dir),
    ]  # fmt: skip


class TorchrunNode(_Launched):
    """This machine's ranks of a multi-node job, under ``torchrun`` (see :class:`NodeSpec`).

    torchrun stays in this process's group (a TERM or KILL to the group reaches it); it starts
    each rank in a session of its own and passes a TERM on to them, and each rank is told
    (``DIE_WITH_TORCHRUN``) to die with it, so no rank outlives a killed torchrun. The same
    interface as :class:`RankGroup`."""

    def __init__(
        self, job_dir: Path, node: NodeSpec, *, env: dict[str, str] | None = None, log: Any = None
    ) -> None:
        resources = job_resources(job_dir)
        env = rank_env(resources.device, env)
        env[names.DIE_WITH_TORCHRUN] = "1"
        if env.get("DS_ACCELERATOR") == "cpu":
            env[names.CPU_THREADS] = str(cpu_threads(env, resources.ranks_per_node))
        self.lock_fd = lock_job_dir(job_dir, name=f"{LOCK_FILE}.node{node.node}")
        self._stop_at: float | None = None
        self.proc = subprocess.Popen(
            torchrun_command(job_dir, node, resources.ranks_per_node),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            preexec_fn=_die_with_parent,
            pass_fds=(self.lock_fd,),
        )
        self.procs = [self.proc]

    def poll(self) -> int | None:
        """torchrun's exit code once it has ended (a KILL after the grace: its ranks die with it)."""
        code = self.proc.poll()
        if code is None:
            self._kill_if_overdue()
        return code


def settle(job_dir: Path, returncode: int, *, interrupted: bool, started: float, write: bool = True) -> int:
    """The job's exit code from the ranks' code and what rank 0 wrote.

    Where rank 0 left no final status (a rank crashed, or was killed), ``status.json`` is
    completed here (unless ``write`` is false: a multi-node job's other nodes leave that to node
    0) so that it always ends in a terminal state.
    """
    status = read_status(job_dir)
    if status.get("status") == "succeeded" and returncode == 0:  # (a finished job started again, too)
        return EXIT_OK
    fresh = float(status.get("updated") or 0) >= started
    state = status.get("status") if fresh else None
    if state == "interrupted" or (
        (interrupted or returncode == EXIT_INTERRUPTED) and state not in ("succeeded", "failed")
    ):
        if state != "interrupted" and write:
            write_status(job_dir, **{**status, "status": "interrupted"})
        return EXIT_INTERRUPTED
    if state == "failed":
        return EXIT_USAGE if returncode == EXIT_USAGE else EXIT_FAILED
    if not write:
        return EXIT_FAILED
    message = f"a rank exited with code {returncode} before the job finished; see {job_dir / LAUNCHER_LOG}"
    try:
        write_status(job_dir, **{**status, "status": "failed", "error": message})
    except OSError as exc:  # a full or read-only disk: the exit code still says failed
        print(f"childtune launcher: cannot write status.json: {exc}", file=sys.stderr, flush=True)
    return EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# python -m workers.launch: the supervisor a worker runs
# ---------------------------------------------------------------------------------------------


def supervise_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.launch", description="Run a job's ranks.")
    ap.add_argument("--job-dir", required=True, type=Path, help="the job's directory (holds job.json)")
    node_args = ap.add_argument_group("a multi-node job's node (torchrun, c10d rendezvous)")
    node_args.add_argument("--nnodes", type=int, default=1)
    node_args.add_argument(
        "--node", type=int, default=0, help="this node's index in the gang (0 hosts the rendezvous)"
    )
    node_args.add_argument("--rdzv-endpoint", default=None, help="host:port of node 0's rendezvous")
    node_args.add_argument("--rdzv-id", default=None)
    node_args.add_argument(
        "--local-addr", default="127.0.0.1", help="the address other nodes reach this one on"
    )
    node_args.add_argument("--rdzv-timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    job_dir = a.job_dir.resolve()
    node = None
    if a.rdzv_endpoint is not None:
        node = NodeSpec(
            a.nnodes, a.node, a.rdzv_endpoint, a.rdzv_id or job_dir.name, a.local_addr, a.rdzv_timeout
        )
    leader = node is None or node.node == 0  # who completes status.json
    try:
        resources = job_resources(job_dir)
    except SpecError as exc:  # what rank 0 would have recorded, had the ranks started
        if leader:
            write_status(job_dir, status="failed", phase="preparing", step=0, error=str(exc))
        print(f"childtune launcher: {job_dir / JOB_FILE}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    if node is not None and node.nnodes != resources.nodes:
        print(
            f"childtune launcher: resources.nodes: {JOB_FILE} asks for {resources.nodes} nodes, started as "
            f"one of {node.nnodes}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_USAGE
    interrupted = False
    group: RankGroup | TorchrunNode | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        # A TERM to the whole process group reached the ranks already (torchrun's ranks: through
        # torchrun); one to this process alone (our parent died: see workers.tasks) did not.
        # Either way pass it on, and KILL what is left after the grace period: no rank outlives
        # its supervisor for long.
        nonlocal interrupted
        interrupted = True
        if group is not None:
            group.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.time()
    try:
        group = RankGroup(job_dir) if node is None else TorchrunNode(job_dir, node)
    except JobDirBusy as exc:  # (status.json is the other run's: leave it alone)
        print(f"childtune launcher: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    if interrupted:  # a signal came while the ranks were starting
        group.request_stop()
    code = group.wait()
    return settle(job_dir, code, interrupted=interrupted, started=started, write=leader)


if __name__ == "__main__":
    raise SystemExit(supervise_main())
