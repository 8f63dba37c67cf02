"""Security headers on every answer of the real API process (``service/api/headers.py``): the
dashboard's page and its module scripts, API answers (JSON, errors, the upload limit's 413),
and FastAPI's interactive docs; and the dashboard's scripts served as JavaScript."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx

from service.api.headers import CSP
from tests.e2e.stack import Api


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def assert_security_headers(response: httpx.Response, policy: str = CSP) -> None:
    assert response.headers.get("content-security-policy") == policy, response.request.url
    assert directives(response.headers["content-security-policy"])["frame-ancestors"] == ["'none'"]
    assert response.headers.get("x-content-type-options") == "nosniff", response.request.url
    assert response.headers.get("referrer-policy") == "no-referrer", response.request.url
    # Each once: the middleware replaces, never doubles, a header an answer already had.
    for name in ("content-security-policy", "x-content-type-options", "referrer-policy"):
        assert len(response.headers.get_list(name)) == 1, name


def test_the_dashboard_policy_allows_only_this_origin() -> None:
    policy = directives(CSP)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # module scripts of this origin; nothing inline
    assert policy["connect-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert not re.search(r"https?:|\*", CSP)


def test_the_dashboard_page_and_its_modules_carry_the_headers(api: Api) -> None:
    client = api.client(None)
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_security_headers(page)
    assert '<script type="module" src="app.js">' in page.text
    assert "http-equiv" not in page.text  # the policy is the header's, not a copy in a meta tag
    for path in ("/ui/app.js", "/ui/lib/api.js", "/ui/views/job.js"):
        script = client.get(path)
        assert script.status_code == 200, path
        # A module script runs only with a JavaScript media type (and nosniff holds it to that).
        assert script.headers["content-type"] == "text/javascript; charset=utf-8", path
        assert_security_headers(script)
        # Revalidated each load: never modules of two versions together after an upgrade.
        assert script.headers["cache-control"] == "no-cache" and script.headers["etag"], path
        again = client.get(path, headers={"If-None-Match": script.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == "no-cache", path
        assert_security_headers(again)
    assert_security_headers(client.get("/ui/style.css"))
    assert_security_headers(client.get("/ui/no-such-file.js"))  # the 404 too
    redirect = client.get("/", follow_redirects=False)
    assert redirect.status_code in (302, 307) and redirect.headers["location"] == "/ui/"
    assert_security_headers(redirect)


def test_api_answers_carry_the_headers(api: Api) -> None:
    anonymous, alice = api.client(None), api.client("alice")
    assert_security_headers(anonymous.get("/healthz"))
    assert_security_headers(anonymous.get("/openapi.json"))
    jobs = alice.get("/v1/jobs")
    assert jobs.status_code == 200 and jobs.headers["content-type"] == "application/json"
    assert_security_headers(jobs)
    refused = anonymous.get("/v1/jobs")
    assert refused.status_code == 401
    assert_security_headers(refused)
    missing = alice.get("/v1/jobs/job-0123456789abcdef")
    assert missing.status_code == 404
    assert_security_headers(missing)
    invalid = alice.post("/v1/jobs", json={"model": "minilm-l6"})
    assert invalid.status_code == 422
    assert_security_headers(invalid)


def test_the_upload_limits_answer_carries_the_headers(api: Api) -> None:
    # The API under test refuses uploads over 0.05 MB before reading them (UploadLimit).
    big = b"text,label\n" + b"x" * 200_000 + b",1\n"
    response = api.client("alice").post("/v1/files", files={"file": ("big.csv", big)})
    assert response.status_code == 413, response.text
    assert_security_headers(response)


def test_the_interactive_docs_load_nothing_from_elsewhere_and_allow_only_their_own_script(api: Api) -> None:
    """/docs is Swagger UI from the vendored copy under /ui: its page's policy is the dashboard's
    with its one inline script allowed by hash; ReDoc is not served."""
    response = api.client(None).get("/docs")
    assert response.status_code == 200
    page = response.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/ui/") for s in sources), sources
    policy = response.headers["content-security-policy"]
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy == CSP.replace("script-src 'self'", f"script-src 'self' 'sha256-{digest}'")
    assert "validatorUrl" in script and "null" in script  # no badge fetched from swagger.io
    for source in sources:
        assert api.client(None).get(source).status_code == 200, source
    assert api.client(None).get("/redoc").status_code == 404
