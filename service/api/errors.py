"""Errors as JSON: ``{"error": {"code", "message", "field"}}``, one handler per kind of failure.

Routes raise :class:`ApiError`; a caller's mistake is a 4xx naming the field and the fix; an
unreachable Redis is a 503 with ``Retry-After``; anything else is logged and answered 500
without internals.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.contract import SpecError

__all__ = ["RETRY_AFTER_S", "ApiError", "error_body", "install_error_handlers"]

log = logging.getLogger("childtune.api")
RETRY_AFTER_S = 5


def error_body(code: str, message: str, field: str | None = None) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": code, "message": message, "field": field}}


class ApiError(Exception):
    """An answer other than success: HTTP status, a stable code, a message and the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    @classmethod
    def not_found(cls, what: str, ident: str) -> ApiError:
        return cls(404, "not_found", f"no {what} {ident!r} (for this API key)")

    @classmethod
    def from_spec_error(cls, exc: SpecError) -> ApiError:
        return cls(422, "invalid_spec", str(exc), exc.field or None)


def _json(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.message, exc.field), status_code=exc.status, headers=exc.headers
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc)

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
        return _json(ApiError.from_spec_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or None
        message = str(first.get("msg", "invalid request"))
        return _json(ApiError(422, "invalid_request", f"{field}: {message}" if field else message, field))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return _json(ApiError(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {})))

    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("store unavailable: %s", exc)
        return _json(
            ApiError(
                503,
                "store_unavailable",
                "the job store (Redis) is unreachable; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        )

    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.add_exception_handler(redis.TimeoutError, _redis_down)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _json(ApiError(500, "internal_error", "internal error; the server log has the details"))
