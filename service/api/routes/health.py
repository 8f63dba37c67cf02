"""``/healthz`` (the process is alive), ``/readyz`` (Redis and a worker), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import SettingsDep, StoreDep
from service.api.errors import RETRY_AFTER_S, error_body, error_responses

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the API process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Redis reachable and at least one worker alive",
    responses=error_responses(
        503,
        descriptions={
            503: "Not ready: Redis is unreachable (store_unavailable) or no worker is alive (no_workers)."
        },
    ),
)
def readyz(store: StoreDep, settings: SettingsDep) -> Any:
    try:
        store.ping()
        workers = store.workers_alive(settings.heartbeat_ttl_s)
    except Exception as exc:
        body = error_body("store_unavailable", f"Redis is unreachable: {exc}")
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    if not workers:
        body = error_body(
            "no_workers", "no worker has sent a heartbeat recently (start one: childtune worker)"
        )
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    return {"status": "ready", "redis": True, "workers": len(workers)}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
