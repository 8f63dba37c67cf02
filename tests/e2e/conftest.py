"""One real stack for the end-to-end tests: redis-server, the API (uvicorn) and a Celery worker
that runs jobs with the real training program (DeepSpeed on CPU over gloo)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e"), "e2e@test", "tiny-bert") as running:
        yield running
