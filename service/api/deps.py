"""Dependencies of the routes: settings, store, Celery app, and the caller's tenant.

Each is ``async def``: none does I/O, and FastAPI runs a plain function on its thread pool, a
hand-off per dependency per request that cost more than the request's own work under load
(``docs/benchmarks.md``, "API under load")."""

from __future__ import annotations

import hmac
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError
from service.core.settings import Settings
from service.core.store import LoopReads, Store

__all__ = ["CeleryDep", "ReadsDep", "SettingsDep", "StoreDep", "TenantDep"]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_reads(request: Request) -> LoopReads:
    reads: LoopReads = request.app.state.reads
    return reads


async def get_celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
ReadsDep = Annotated[LoopReads, Depends(get_reads)]


async def get_tenant(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The tenant of the bearer key; 401 when the key is missing or unknown."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'", headers=challenge
        )
    given = credentials.credentials.encode()
    for key, tenant in settings.tenants_by_key.items():
        if hmac.compare_digest(given, key.encode()):
            return tenant
    raise ApiError(401, "unauthorized", "unknown API key", headers=challenge)


TenantDep = Annotated[str, Depends(get_tenant)]
