"""The signature of a notification and the headers it travels with.

``Childtune-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` under the tenant's
secret (``GET /v1/webhooks/secret``); ``t`` is the attempt's time. The signature header's name is
part of the contract (:data:`~service.core.contract.urls.SIGNATURE_HEADER`); the delivery id and
the event type travel in :data:`DELIVERY_HEADER` and :data:`EVENT_HEADER`.
"""

from __future__ import annotations

import hashlib
import hmac

from service.core.contract.urls import SIGNATURE_HEADER

__all__ = ["DELIVERY_HEADER", "EVENT_HEADER", "SIGNATURE_HEADER", "USER_AGENT", "sign", "signed_headers"]

DELIVERY_HEADER = "Childtune-Delivery"
EVENT_HEADER = "Childtune-Event"
USER_AGENT = "childtune-webhooks/1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` signature: hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, timestamp: int, body: bytes, *, delivery_id: str, event: str
) -> dict[str, str]:
    """The headers of one attempt that sends ``body`` (JSON) at ``timestamp``, signed."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: f"t={timestamp},v1={sign(secret, timestamp, body)}",
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event,
    }
