"""A webhook URL's shape: what the contract can tell of it without the network.

http or https, at most :data:`MAX_WEBHOOK_URL` characters, no spaces or control characters, no
``user:password@`` (a receiver authenticates a notification by its signature header, never by
credentials in the URL), and a host. Whether the host's addresses may be reached is decided at
submit time and again at delivery (``service.core.webhooks.guard``), not here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from service.core.contract.vocabulary import MAX_WEBHOOK_URL

# The header a receiver checks a notification by (``service.core.webhooks.signing``).
SIGNATURE_HEADER = "Childtune-Signature"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook URL by its shape alone, else None."""
    if len(url) > MAX_WEBHOOK_URL:
        return f"at most {MAX_WEBHOOK_URL} characters (got {len(url)})"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        got = f"{parts.scheme}:" if parts.scheme else "no scheme"
        return f"only http and https URLs are allowed (got {got})"
    if "@" in parts.netloc:
        return (
            "must not carry credentials (user:password@host); a receiver authenticates the "
            f"request by its {SIGNATURE_HEADER} header"
        )
    if not parts.hostname:
        return "has no host"
    return None
