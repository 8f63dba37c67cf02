"""Security headers on every answer of the app, and the dashboard's static files.

``SecurityHeaders`` wraps the whole ASGI stack (outside Starlette's error middleware, so an
unhandled error's 500 carries them too): a Content-Security-Policy, ``X-Content-Type-Options:
nosniff`` and ``Referrer-Policy: no-referrer``. The policy is the dashboard's own: scripts,
styles, images and requests from this origin only (docs/dashboard.md), and no framing by any
page (``frame-ancestors 'none'``). A path may have a policy of its own (``/docs`` allows its one
inline script by hash: service/api/docs.py).

``DashboardFiles`` serves ``service/api/ui``: a ``.js`` file as ``text/javascript`` whatever the
host's MIME table says (a browser runs a module script only with a JavaScript type, and
``nosniff`` holds every other script to the same rule), and every file with ``Cache-Control:
no-cache`` (revalidated by its ETag each load, so that a browser never runs modules of two
versions together after an upgrade).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "DashboardFiles", "SecurityHeaders"]

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # uPlot and the mask bars set element styles
        "img-src 'self' blob: data:",  # plots and downloads are blobs of this origin's answers
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8"}


class SecurityHeaders:
    """Add the security headers to every HTTP answer (``policies``: a path's own CSP)."""

    def __init__(self, app: ASGIApp, policies: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.policies = dict(policies or {})

    def headers_for(self, path: str) -> list[tuple[bytes, bytes]]:
        policy = self.policies.get(path, CSP)
        return [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.headers_for(scope["path"])
        names = {name for name, _ in added}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + added}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DashboardFiles(StaticFiles):
    """The dashboard's files, each with its media type (``.js``: JavaScript, always), revalidated."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = MEDIA_TYPES.get(os.path.splitext(str(full_path))[1].lower())
        if media_type is not None and response.status_code != 304:
            response.headers["content-type"] = media_type
        response.headers["cache-control"] = "no-cache"
        return response
