"""``/v1/webhooks``: the tenant's signing secret and its recent deliveries (service/core/webhooks/)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from service.api.deps import StoreDep, TenantDep
from service.api.errors import error_responses
from service.core.records import WebhookDelivery
from service.core.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER

__all__ = ["router"]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=error_responses(401, 503))


class WebhookSecret(BaseModel):
    """The tenant's webhook signing secret: every event it receives is signed with it."""

    secret: str = Field(description="HMAC-SHA256 key (the whole string, as UTF-8).")
    created_at: float
    signature_header: str = Field(
        default=SIGNATURE_HEADER, description='Its value: t=<unix seconds>,v1=<hex HMAC of "<t>.<body>">.'
    )
    delivery_header: str = DELIVERY_HEADER
    event_header: str = EVENT_HEADER


class DeliveryAttempt(BaseModel):
    attempt: int
    at: float
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    error: str | None = Field(description="Why it did not count as delivered (refused address, timeout...).")
    duration_s: float
    outcome: str = Field(description="delivered | retrying | failed (given up)")
    next_attempt_at: float | None


class DeliveryPublic(BaseModel):
    """One notification (a finished job or experiment) and its attempts."""

    id: str = Field(description="The delivery id, also in the body and the Childtune-Delivery header.")
    subject: str = Field(description="The job or experiment id.")
    type: str = Field(description="job.succeeded, job.failed, job.cancelled, experiment.succeeded, ...")
    url: str
    state: str = Field(description="pending | delivered | failed (given up)")
    created_at: float
    next_attempt_at: float | None
    attempts: list[DeliveryAttempt]
    event: dict[str, Any] = Field(description="The body sent, the same on every attempt.")

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryPublic:
        return cls(
            id=delivery.id,
            subject=delivery.subject,
            type=delivery.type,
            url=delivery.url,
            state=delivery.state,
            created_at=delivery.created_at,
            next_attempt_at=delivery.next_attempt_at,
            attempts=[DeliveryAttempt.model_validate(a) for a in delivery.attempts],
            event=json.loads(delivery.body),
        )


class DeliveryList(BaseModel):
    data: list[DeliveryPublic]


@router.get("/secret", response_model=WebhookSecret, summary="The webhook signing secret (made on first use)")
def get_secret(tenant: TenantDep, store: StoreDep) -> WebhookSecret:
    """Verify each event: recompute the HMAC of ``"<t>.<raw body>"`` and compare it with ``v1``;
    refuse a ``t`` far from now (replays)."""
    secret, created = store.webhook_secret(tenant)
    return WebhookSecret(secret=secret, created_at=created)


@router.post("/secret/rotate", response_model=WebhookSecret, summary="Replace the webhook signing secret")
def rotate_secret(tenant: TenantDep, store: StoreDep) -> WebhookSecret:
    """A new secret signs every attempt from now on, retries of earlier events included; the old
    one signs nothing more."""
    secret, created = store.webhook_secret(tenant, rotate=True)
    return WebhookSecret(secret=secret, created_at=created)


@router.get("/deliveries", response_model=DeliveryList, summary="Recent webhook deliveries, newest first")
def list_deliveries(
    tenant: TenantDep,
    store: StoreDep,
    subject: Annotated[
        str | None,
        Query(
            pattern=r"^(job|exp)-[0-9a-f]{16}$", description="Only the delivery of this job or experiment."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DeliveryList:
    """Each notification with its attempts (kept 7 days once delivered or given up)."""
    if subject is not None:
        found = store.get_delivery(subject, tenant)
        return DeliveryList(data=[DeliveryPublic.of(found)] if found is not None else [])
    return DeliveryList(data=[DeliveryPublic.of(d) for d in store.list_deliveries(tenant, limit=limit)])
