"""Real processes for the service tests: redis-server, the API (uvicorn), a Celery worker.

Nothing here imitates the service: each helper starts the real program on loopback and waits
until it answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from service.cli.client import Client
from service.cli.local_stack import RedisServer
from service.core.procs import free_port
from tests.workers.tiny import write_tiny_model

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789"}
DATA = ROOT.parent / "shared" / "data"

__all__ = [
    "KEYS",
    "ROOT",
    "Api",
    "RedisServer",
    "Stack",
    "free_port",
    "model_root",
    "process_alive",
    "rank_pids",
    "running_stack",
    "service_env",
    "start_api",
    "start_worker",
    "stop",
    "wait_for",
    "write_tiny_model",
]


@dataclass
class Api:
    """A running API (without a worker) and a client of its Redis."""

    url: str
    redis: redis.Redis
    artifacts: Path

    def client(self, tenant: str | None = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@dataclass
class Stack:
    """A running API with a worker, the tiny model, and the environment they share."""

    url: str
    redis_url: str
    artifacts: Path
    model: Path
    env: dict[str, str]
    logs: Path

    def client(self, tenant: str = "alice") -> Client:
        return Client(self.url, KEYS[tenant])


def service_env(redis_url: str, artifacts: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CHILDTUNE_ENV": "development",
        "CHILDTUNE_REDIS_URL": redis_url,
        "CHILDTUNE_ARTIFACTS": str(artifacts),
        # The operator's model roots: tests write their tiny models into this one.
        "CHILDTUNE_MODEL_ROOTS": str(artifacts.parent / "models"),
        "CHILDTUNE_API_KEYS": ",".join(f"{key}:{tenant}" for tenant, key in KEYS.items()),
        "CHILDTUNE_HEARTBEAT_INTERVAL_S": "1",
        "CHILDTUNE_HEARTBEAT_TTL_S": "6",
        "CHILDTUNE_SOFT_SHUTDOWN_S": "10",
        "CHILDTUNE_KILL_GRACE_S": "3",
        "DS_ACCELERATOR": "cpu",
        "CI": "true",
    }
    if DATA.is_dir():
        env["CHILDTUNE_DATA"] = str(DATA)
    env.update(extra)
    return env


def model_root(env: dict[str, str]) -> Path:
    """The (first) model root of a service environment: where a test puts models jobs may name."""
    return Path(env["CHILDTUNE_MODEL_ROOTS"].split(",")[0])


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = _spawn([sys.executable, "-m", "service.cli", "api", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or _answers(url + "/healthz"), 60, "the API")
    except AssertionError:
        stop(proc)
        raise
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc, url


def start_worker(
    env: dict[str, str], log: Path, hostname: str, api_url: str, *, concurrency: int = 1
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "service.cli", "worker", "--hostname", hostname]
    proc = _spawn([*argv, "--concurrency", str(concurrency)], env, log)
    try:
        wait_for(lambda: proc.poll() is not None or _answers(api_url + "/readyz"), 90, "a worker heartbeat")
    except AssertionError:
        stop(proc)
        raise
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (exists and is not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` (e.g. "64m") at ``path``; False where it cannot (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def rank_pids(job_dir: Path) -> list[int]:
    """Processes whose command line names the job directory (launcher, torchrun, ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(job_dir) in cmd and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running_stack(
    base: Path, hostname: str, model_name: str, *, concurrency: int = 1, env_without: tuple[str, ...] = ()
) -> Iterator[Stack]:
    """Redis, the API and a worker of ``concurrency`` slots under ``base``, with the tiny model in
    the operator's model root as ``model_name``; all stopped on exit."""
    server = RedisServer(base / "redis")
    server.start()
    env = service_env(server.url, base / "artifacts")
    for name in env_without:
        env.pop(name, None)
    api, url = start_api(env, base / "api.log")
    worker = None
    try:
        worker = start_worker(env, base / "worker.log", hostname, url, concurrency=concurrency)
        model = write_tiny_model(model_root(env) / model_name)
        yield Stack(url, server.url, base / "artifacts", model, env, base)
    finally:
        if worker is not None:
            stop(worker)
        stop(api)
        server.stop()
