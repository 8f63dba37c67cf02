"""One real stack for the end-to-end tests: redis-server, the API (uvicorn) and a Celery worker
that runs jobs with the real training program (DeepSpeed on CPU over gloo)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import (
    RedisServer,
    Stack,
    model_root,
    service_env,
    start_api,
    start_worker,
    stop,
    write_tiny_model,
)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("e2e")
    server = RedisServer(base / "redis")
    server.start()
    env = service_env(server.url, base / "artifacts")
    api, url = start_api(env, base / "api.log")
    worker = None
    try:
        worker = start_worker(env, base / "worker.log", "e2e@test", url)
        yield Stack(
            url, server.url, base / "artifacts", write_tiny_model(model_root(env) / "tiny-bert"), env, base
        )
    finally:
        if worker is not None:
            stop(worker)
        stop(api)
        server.stop()
