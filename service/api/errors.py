"""Errors as JSON: ``{"error": {"code", "message", "field"}}``, one handler per kind of failure.

Routes raise :class:`ApiError`; a caller's mistake is a 4xx naming the field and the fix; an
unreachable Redis is a 503 with ``Retry-After``; anything else is logged and answered 500
without internals.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import ErrorResponse
from service.core.contract import SpecError
from service.core.usecases.errors import Conflict, Invalid, NotFound, Refused, Unavailable

__all__ = [
    "RETRY_AFTER_S",
    "ApiError",
    "error_body",
    "error_responses",
    "install_error_handlers",
]

log = logging.getLogger("childtune.api")
RETRY_AFTER_S = 5


def error_body(code: str, message: str, field: str | None = None) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": code, "message": message, "field": field}}


_ERROR_DESCRIPTIONS = {
    400: "The body cannot be parsed (not UTF-8 JSON, or malformed multipart).",
    401: "Missing or unknown API key.",
    404: "No such id for this API key (another tenant's id answers the same).",
    409: "Conflict with the resource's state.",
    413: "The upload is over the size limit (CHILDTUNE_MAX_UPLOAD_MB).",
    422: "Invalid input; error.field names the first bad field.",
    503: "The job store (Redis) is unreachable; retry after Retry-After seconds.",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}


def error_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` (FastAPI's ``responses=``) for error answers: the error body, a
    description per status (``descriptions`` overrides), ``Retry-After`` with a 503."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = (descriptions or {}).get(status, _ERROR_DESCRIPTIONS[status])
        entry: dict[str, Any] = {"model": ErrorResponse, "description": description}
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


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
        return cls.from_refusal(NotFound(what, ident))

    @classmethod
    def from_spec_error(cls, exc: SpecError) -> ApiError:
        return cls(422, "invalid_spec", str(exc), exc.field or None)

    @classmethod
    def from_refusal(cls, exc: Refused) -> ApiError:
        """A use case's refusal (``service.core.usecases.errors``) as its HTTP answer."""
        if isinstance(exc, Unavailable):
            return cls(503, exc.code, exc.message, exc.field, {"Retry-After": str(RETRY_AFTER_S)})
        status = {NotFound: 404, Conflict: 409, Invalid: 422}.get(type(exc), 400)
        return cls(status, exc.code, exc.message, exc.field)


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

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return _json(ApiError.from_refusal(exc))

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
        return _json(ApiError.from_spec_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":  # loc is ("body", <character offset>), not a field
            where = first.get("loc", ())[-1:]
            reason = str((first.get("ctx") or {}).get("error", "JSON decode error"))
            at = f" at character {where[0]}" if where and isinstance(where[0], int) else ""
            return _json(ApiError(422, "invalid_request", f"the body is not valid JSON: {reason}{at}"))
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
