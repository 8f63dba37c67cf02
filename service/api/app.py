"""The FastAPI application: routers, error handlers, upload limit, metrics, security headers,
the dashboard's files, OpenAPI."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import TypeAdapter
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.docs import DOCS_PATH, docs_csp, docs_html
from service.api.errors import error_body, install_error_handlers
from service.api.headers import DashboardFiles, SecurityHeaders
from service.api.observability import install_metrics
from service.api.routes import artifacts, experiments, files, health, jobs, webhooks
from service.api.schemas import ErrorResponse
from service.core.contract import JobSpec
from service.core.contract.vocabulary import FinalStatus
from service.core.queue import make_celery
from service.core.settings import Settings, load_settings
from service.core.store import LoopReads, Store

__all__ = ["create_app"]

DESCRIPTION = """Fine-tune models with the ChildTuning family of methods on a pool of GPU workers.

Authenticate with `Authorization: Bearer <API key>`; a key belongs to a tenant, which sees only
its own jobs and files. Errors are `{"error": {"code", "message", "field"}}`.
Poll `/v1/jobs/{id}/metrics?after=<next_cursor>` to see every record exactly once."""


class UploadLimit:
    """Refuse an upload whose declared size is over the limit before reading its body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/files":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes + (1 << 16):
                import json

                body = json.dumps(
                    error_body("too_large", f"the upload is larger than {self.max_bytes} bytes", "file")
                ).encode()
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _document_errors(schema: dict[str, Any]) -> None:
    """FastAPI documents a request validation failure as its own ``HTTPValidationError``
    (``{"detail": [...]}``); this API answers it with the error body (errors.py): say so.
    Each operation's answers are listed by status."""
    fastapi_ref = "#/components/schemas/HTTPValidationError"
    ours = {"$ref": "#/components/schemas/ErrorResponse"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            response = responses.get("422")
            content = (response or {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == fastapi_ref:
                response["description"] = "Invalid input; error.field names the first bad field."
                content["schema"] = ours
            operation["responses"] = dict(sorted(responses.items()))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorResponse" not in components:
        error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(error_schema.pop("$defs", {}))
        components["ErrorResponse"] = error_schema
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment; unsafe production settings raise)."""
    settings = settings or load_settings()
    app = FastAPI(title="childtune", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None)
    store = Store.from_url(settings.redis_url)
    app.state.settings = settings
    app.state.store = store
    app.state.reads = LoopReads.from_url(settings.redis_url)
    app.state.celery = make_celery(settings)
    install_error_handlers(app)
    app.state.registry = install_metrics(app, store, settings)
    for module in (health, files, jobs, experiments, artifacts, webhooks):
        app.include_router(module.router)
    # The dashboard (docs/dashboard.md): static files reading the API above; not in the schema.
    app.mount("/ui", DashboardFiles(packages=[("service.api", "ui")], html=True), name="ui")
    app.add_api_route("/", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    # Swagger UI from the vendored copy under /ui (service/api/docs.py), not from a CDN.
    html = docs_html(app.openapi_url or "/openapi.json", f"{app.title} API")
    app.add_api_route(DOCS_PATH, lambda: HTMLResponse(html), include_in_schema=False)
    # Outside Starlette's own error middleware too, so that every answer carries the headers.
    policies = {DOCS_PATH: docs_csp(html)}
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: SecurityHeaders(build_stack(), policies=policies)  # type: ignore[method-assign]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec_schema.pop("$defs", {}))
            components["JobSpec"] = spec_schema
            # The statuses a job never leaves: no field has this type, but the dashboard reads
            # it (with the other enumerations) from this document rather than keeping a copy.
            components["FinalStatus"] = {
                "title": "FinalStatus",
                "description": "The statuses a job (an experiment, once all its jobs have one) never leaves.",
                **TypeAdapter(FinalStatus).json_schema(),
            }
            _document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
