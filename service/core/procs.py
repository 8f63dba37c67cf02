"""Processes and ports for every launcher in the project: children that do not outlive their
parent (Linux), stopping a child's whole process group, a free loopback port, and a job's
rendezvous port."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child, before exec (``preexec_fn``): receive ``sig`` when the parent dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for ports it hands out itself (bind to 0, outgoing connections)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


RENDEZVOUS_LOW = 10000  # below: the well-known and registered ports services tend to sit on


def rendezvous_port() -> int:
    """A free TCP port for a job's rendezvous (``MASTER_PORT``, bound later by rank 0's store).

    Not :func:`free_port`: a port the kernel handed out (bind to 0) lies in its ephemeral range,
    where any outgoing connection of another process (a Redis client, NCCL, another job's ranks)
    may be given it before rank 0 binds it, and jobs launched at the same moment may be handed the
    same just-freed port. Seen on one GPU with 12 jobs at once: a job failed with EADDRINUSE. So
    the port is drawn at random (from the OS's entropy, not a forked worker's shared random state)
    outside the ephemeral range and checked free, on every address as rank 0 binds it.
    """
    low, high = ephemeral_ports()
    for _ in range(128):
        port = RENDEZVOUS_LOW + secrets.randbelow(65536 - RENDEZVOUS_LOW)
        if low <= port <= high:
            continue  # drawn again: about half the draws with Linux's default range
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("", port))
            return port
    return free_port()  # nothing free outside the ephemeral range (an odd sysctl, or all taken)


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(
    proc: subprocess.Popen[bytes],
    grace_s: float,
    *,
    sig: int = signal.SIGTERM,
    leader_only: bool = False,
    on_kill: Callable[[], None] | None = None,
) -> int:
    """Stop ``proc`` (started with ``start_new_session=True``) and every process of its group.

    Sends ``sig`` to the whole group, or to ``proc`` alone with ``leader_only`` (a process that
    stops its own children, like a Celery worker's warm shutdown); waits up to ``grace_s`` for
    it (and, for a group signal, the whole group) to end; then SIGKILLs what is left of the
    group, calling ``on_kill`` first when ``proc`` itself had not stopped. Returns ``proc``'s exit code; on
    return no process of the group is left (after at most 10 s more).
    """
    pgid = proc.pid
    if proc.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if leader_only:
                proc.send_signal(sig)
            else:
                os.killpg(pgid, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and (leader_only or not group_alive(pgid)):
            break
        time.sleep(0.05)
    if proc.poll() is None and on_kill is not None:
        on_kill()
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        proc.poll()  # reap the killed leader: until then its zombie still counts in the group
        time.sleep(0.05)
    return proc.wait()
