"""The API's hot read path on the event loop (a job and its streams)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.core.records import JobRecord, Page
from service.core.store.base import P, job_of, page_of, stream_low


class LoopReads:
    """The API's hot read path, a job and its streams, run on the event loop itself.

    Every client polls these, so they skip FastAPI's thread pool (a hand-off costs more than the
    read: ~0.1 ms on loopback) and redis-py's asyncio client (measured 1.9 ms of API CPU per
    request against 1.3 ms, and a p99 three times longer; docs/benchmarks.md). A read blocks
    the loop only briefly: its socket timeout is :data:`TIMEOUT_S`, and after a failure the
    store counts as down for :data:`BACKOFF_S`, answering at once (a 503) instead of trying,
    so an unreachable Redis stalls the loop for at most two timeouts per back-off period.
    Same keys and answers as :class:`Store`.
    """

    TIMEOUT_S = 1.0
    BACKOFF_S = 1.0

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str) -> LoopReads:
        timeout = cls.TIMEOUT_S
        # One immediate retry (a pooled connection that Redis closed by restarting fails once),
        # not redis-py's default of 3 with back-off: a read blocks the loop for 2 timeouts at most.
        no_retry = Retry(NoBackoff(), 1)
        return cls(
            redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=no_retry,
            )
        )

    def _call(self, action: Callable[[], Any]) -> Any:
        if time.monotonic() < self._down_until:
            raise redis.ConnectionError("the job store failed a moment ago; not retried yet")
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError):
            self._down_until = time.monotonic() + self.BACKOFF_S
            raise

    async def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        raw = self._call(lambda: self.r.hgetall(P + f"job:{job_id}"))
        return job_of(cast(dict[str, str], raw), tenant)

    async def owns(self, tenant: str, job_id: str) -> bool:
        """Whether the job exists and is ``tenant``'s (one field read, not the whole record)."""
        raw = self._call(lambda: self.r.hget(P + f"job:{job_id}", "tenant"))
        return raw is not None and json.loads(cast(str, raw)) == tenant

    async def read_stream(self, job_id: str, which: str, *, after: str = "0", limit: int = 1000) -> Page:
        low = stream_low(which, after)
        if low is None:
            return Page(items=[], next_cursor=after)
        rows = self._call(lambda: self.r.xrange(P + f"job:{job_id}:{which}", low, "+", count=limit))
        return page_of(cast(list[tuple[str, dict[str, str]]], rows), after)
