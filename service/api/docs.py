"""The API's interactive docs at ``/docs``: FastAPI's Swagger UI page with its script and style
served from the dashboard's vendored copy (``service/api/ui/vendor/swagger-ui``, Swagger UI
5.36.0 from npm), nothing from a CDN and no validator badge fetched from swagger.io. The page's
one inline script (its call of ``SwaggerUIBundle``) is allowed by its SHA-256 in the page's
Content-Security-Policy, which is otherwise the dashboard's (:data:`service.api.headers.CSP`).
ReDoc is not served: one interactive reference is enough, and ``/openapi.json`` is the contract.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi.openapi.docs import get_swagger_ui_html

from service.api.headers import CSP

__all__ = ["DOCS_PATH", "docs_csp", "docs_html"]

DOCS_PATH = "/docs"
SWAGGER_UI = "/ui/vendor/swagger-ui"
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def docs_html(openapi_url: str, title: str) -> str:
    response = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url="/ui/favicon.svg",
        swagger_ui_parameters={"validatorUrl": None},
    )
    return bytes(response.body).decode()


def docs_csp(html: str) -> str:
    """The dashboard's policy, with the page's inline scripts allowed by their hashes."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in INLINE_SCRIPT.findall(html)
    ]
    return CSP.replace("script-src 'self'", " ".join(["script-src 'self'", *hashes]), 1)
