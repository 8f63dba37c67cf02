"""Prometheus metrics of the API: request latency, jobs by status, queue depth, live workers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core import env
from service.core.settings import ALL_QUEUES, Settings
from service.core.store import Store

__all__ = ["install_metrics"]


class StoreCollector(Collector):
    """Read at scrape time from the store (no state kept in the API process)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.settings = store, settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("childtune_redis_up", "1 when the job store (Redis) answers")
        jobs = GaugeMetricFamily("childtune_jobs", "Jobs by status", labels=["status"])
        depth = GaugeMetricFamily(
            "childtune_queue_depth", "Jobs waiting in each Celery queue", labels=["queue"]
        )
        workers = GaugeMetricFamily("childtune_workers_alive", "Workers with a fresh heartbeat")
        try:
            counts = self.store.count_by_status()
            depths = self.store.queue_depths(ALL_QUEUES)
            alive = len(self.store.workers_alive(self.settings.heartbeat_ttl_s))
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for status, count in counts.items():
            jobs.add_metric([status], count)
        for queue, count in depths.items():
            depth.add_metric([queue], count)
        workers.add_metric([], alive)
        yield from (up, jobs, depth, workers)


class _Timer:
    """Times every HTTP request until its response starts, by method, route template and status.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps each request in extra
    tasks and streams, a fifth of the API's time per request under load.
    """

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        started = False

        def observe(status: int) -> None:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - start)

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not started:  # no answer at all: counted as the server's failure
                observe(500)


def install_metrics(app: FastAPI, store: Store, settings: Settings) -> CollectorRegistry:
    """Time every request; returns the registry ``/metrics`` serves. With several API processes
    (``PROMETHEUS_MULTIPROC_DIR`` set, see ``service.api.server``) each process writes its
    samples there and the served registry adds every process's up (prometheus_client's
    multiprocess mode); the store's gauges are read from Redis at scrape time either way."""
    registry = CollectorRegistry()
    served = registry
    if os.environ.get(env.PROMETHEUS_MULTIPROC_DIR):
        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)
    latency = Histogram(
        "childtune_http_request_duration_seconds",
        "Time to answer an HTTP request (until the response starts)",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    served.register(StoreCollector(store, settings))

    app.add_middleware(_Timer, histogram=latency)

    return served
