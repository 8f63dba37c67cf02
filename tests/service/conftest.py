"""A real redis-server and a real API process (uvicorn) for the service tests; no worker here,
so what a request enqueues stays in the queue where a test can count it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.e2e.stack import Api, RedisServer, service_env, start_api, stop


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    base = tmp_path_factory.mktemp("api")
    server = RedisServer(base / "redis")
    server.start()
    env = service_env(server.url, base / "artifacts", CHILDTUNE_MAX_UPLOAD_MB="0.05")
    proc, url = start_api(env, base / "api.log")
    try:
        yield Api(url, redis.Redis.from_url(server.url, decode_responses=True), base / "artifacts")
    finally:
        stop(proc)
        server.stop()
