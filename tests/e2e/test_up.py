"""``childtune up`` starts Redis, the API and a worker, and Ctrl-C stops all of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.stack import ROOT, free_port, wait_for


def processes_with_env(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in environ and state != "Z":
                found.append(int(entry.name))
    return found


def start_up(state: Path, port: int, output: int) -> tuple[subprocess.Popen[str], dict[str, str], str]:
    """`childtune up` on ``state`` and ``port``: the process, its environment, the marker of its children."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHILDTUNE_")}
    env.update({"PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "CHILDTUNE_HEARTBEAT_INTERVAL_S": "1"})
    up = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--state", str(state), "--port", str(port)],
        env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return up, env, f"CHILDTUNE_STATE={state}"


def test_up_serves_the_cli_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    up, env, marker = start_up(state, port, subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        # up.json is written once the stack is ready: wait for both
        wait_for(lambda: up.poll() is not None or (ready() and (state / "up.json").exists()), 120, "up")
        assert up.poll() is None
        key = (state / "api-key").read_text().strip()
        assert key and (state / "api-key").stat().st_mode & 0o077 == 0
        assert len(processes_with_env(marker)) >= 3  # redis is started without it; API, worker, pool
        port_of_redis = redis_port(state)
        assert len(redis_pids(port_of_redis)) == 1
        # The CLI finds the URL and the key that `up` wrote.
        cli_env = {**env, "CHILDTUNE_STATE": str(state)}
        listed = subprocess.run(
            [sys.executable, "-m", "service.cli", "jobs"],
            env=cli_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert listed.returncode == 0 and listed.stdout.startswith("ID"), listed.stderr
        up.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, _ = up.communicate(timeout=90)
        assert up.returncode == 0, out
        assert time.monotonic() - started < 60
        assert "stopped" in out
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert processes_with_env(marker) == []
    assert redis_pids(port_of_redis) == []
    try:
        httpx.get(url + "/healthz", timeout=1)
        answered = True
    except httpx.HTTPError:
        answered = False
    assert not answered


def redis_port(state: Path) -> str:
    return str(json.loads((state / "up.json").read_text())["redis_url"].rsplit(":", 1)[1].split("/")[0])


def redis_pids(port: str) -> list[int]:
    """redis-server processes on ``port`` (redis-server rewrites its command line to
    ``.../redis-server HOST:PORT``, so its --dir cannot be seen there)."""
    wanted = f"redis-server 127.0.0.1:{port}".encode()
    pids = (p for p in Path("/proc").iterdir() if p.name.isdigit())
    return [int(p.name) for p in pids if wanted in _cmdline(p)]


def _cmdline(entry: Path) -> bytes:
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""


def test_nothing_outlives_a_killed_up(tmp_path: Path) -> None:
    """SIGKILL gives `up` no chance to stop anything: Redis, the API and the worker die with it."""
    state = tmp_path / "state"
    up, _, marker = start_up(state, free_port(), subprocess.DEVNULL)
    try:
        wait_for(lambda: up.poll() is not None or (state / "up.json").exists(), 120, "childtune up")
        wait_for(lambda: len(processes_with_env(marker)) >= 3, 60, "the API and the worker")
        port_of_redis = redis_port(state)
        assert len(redis_pids(port_of_redis)) == 1
    finally:
        up.kill()
        up.wait()
    wait_for(lambda: processes_with_env(marker) == [], 60, "the API and the worker to exit")
    wait_for(lambda: redis_pids(port_of_redis) == [], 30, "redis-server to exit")


def test_up_refuses_a_concurrency_below_one_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "service.cli", "up", "--state", str(tmp_path / "st"), "--concurrency", "0"]
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--concurrency must be >= 1 (got 0)" in proc.stderr, proc.stderr
    assert not (tmp_path / "st").exists()  # no state folder, no Redis
