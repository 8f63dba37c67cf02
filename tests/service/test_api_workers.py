"""Several API processes behind one port (`childtune api --workers 2`, real uvicorn and Redis):
each process answers, /metrics counts every process's requests whichever one it asks, and
stopping the API leaves none of them behind."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from service.core import env as names
from tests.e2e.stack import RedisServer, process_alive, service_env, start_api, stop, wait_for

COUNT = re.compile(
    r'childtune_http_request_duration_seconds_count\{method="GET",route="/healthz",status="200"\} (\S+)'
)


def _healthz_count(url: str) -> float:
    text = httpx.get(url + "/metrics", headers={"Connection": "close"}, timeout=30).text
    found = COUNT.search(text)
    assert found, text[:2000]
    return float(found.group(1))


def test_two_api_processes_serve_one_port_and_their_metrics_add_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    samples = tmp_path / "metrics"
    samples.mkdir()
    (samples / "histogram_1.db").write_bytes(b"stale")  # an earlier run's file: emptied at start
    env = service_env(server.url, tmp_path / "artifacts")
    env[names.API_WORKERS] = "2"
    env[names.PROMETHEUS_MULTIPROC_DIR] = str(samples)
    proc, url = start_api(env, tmp_path / "api.log")
    try:
        sent = _healthz_count(url)  # start_api's own readiness probe counts too

        def pids() -> set[int]:
            return {int(m.group(1)) for p in samples.glob("*.db") if (m := re.search(r"_(\d+)\.db$", p.name))}

        def both_answered() -> bool:
            nonlocal sent
            for _ in range(20):  # a new connection each: the kernel hands it to either process
                assert (
                    httpx.get(url + "/healthz", headers={"Connection": "close"}, timeout=30).status_code
                    == 200
                )
                sent += 1
            return len(pids()) >= 2

        wait_for(both_answered, 120, "requests answered by both API processes")
        workers = pids()
        assert 1 not in workers and proc.pid not in workers, workers
        # every scrape, whichever process answers it, counts the requests of both
        for _ in range(6):
            assert _healthz_count(url) == sent
    finally:
        code = stop(proc)
        server.stop()
    assert code is not None
    deadline = time.monotonic() + 60
    while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if process_alive(pid)]


def test_a_bad_worker_count_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = service_env("redis://127.0.0.1:1/0", tmp_path / "artifacts", **{names.API_WORKERS: "zero"})
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "api"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and names.API_WORKERS in done.stderr, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "api", "--workers", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--workers" in done.stderr, done.stderr


@pytest.fixture(autouse=True)
def _no_inherited_samples_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(names.PROMETHEUS_MULTIPROC_DIR, raising=False)
