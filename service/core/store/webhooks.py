"""Webhook notifications as stored: the tenant's signing secret, the due set and each
delivery's attempts (``scripts/claim_webhook.lua``). Delivery itself is ``service.core.webhooks``."""

from __future__ import annotations

import secrets
import time
from typing import cast

from service.core.records import WebhookDelivery
from service.core.store.base import P, StoreBase


class WebhookStore(StoreBase):
    """``ct:webhooks:due``, ``ct:webhook:<subject>``, ``ct:tenant:<t>:webhooks`` and ``:webhook-secret``."""

    def webhook_secret(self, tenant: str, *, rotate: bool = False) -> tuple[str, float]:
        """The tenant's signing secret and when it was made: created on first use; ``rotate``
        replaces it (the old one stops signing at once)."""
        key = P + f"tenant:{tenant}:webhook-secret"
        secret, created = "whsec_" + secrets.token_hex(32), str(time.time())
        if rotate:
            self.r.hset(key, mapping={"secret": secret, "created_at": created})
        else:
            pipe = self.r.pipeline(transaction=True)
            pipe.hsetnx(key, "secret", secret)
            pipe.hsetnx(key, "created_at", created)
            pipe.execute()
        raw = cast(dict[str, str], self.r.hgetall(key))
        return raw["secret"], float(raw["created_at"])

    def due_webhooks(self, now: float, limit: int) -> list[str]:
        """Subjects (job or experiment ids) whose notification is due at ``now``, oldest first."""
        return cast(list[str], self.r.zrangebyscore(P + "webhooks:due", "-inf", now, start=0, num=limit))

    def next_webhook_at(self) -> float | None:
        """When the earliest pending notification is due (None when none is pending)."""
        rows = cast(list[tuple[str, float]], self.r.zrange(P + "webhooks:due", 0, 0, withscores=True))
        return float(rows[0][1]) if rows else None

    def claim_webhook(self, subject: str, now: float, lease_s: float) -> bool:
        """Take a due notification for one attempt (one worker at a time): until ``now +
        lease_s`` no other worker sees it due, after which it is due again if still pending."""
        args = [subject, repr(now), repr(now + lease_s)]
        return bool(self._claim_webhook(keys=[P + "webhooks:due"], args=args))

    def get_delivery(self, subject: str, tenant: str | None = None) -> WebhookDelivery | None:
        raw = cast(str | None, self.r.get(P + f"webhook:{subject}"))
        if raw is None:
            return None
        delivery = WebhookDelivery.model_validate_json(raw)
        return None if tenant is not None and delivery.tenant != tenant else delivery

    def save_delivery(self, delivery: WebhookDelivery, *, keep_s: float, index_max: int = 1000) -> None:
        """Store the delivery after an attempt: still pending, it is due again at its
        ``next_attempt_at``; settled (delivered or given up), it leaves the due set and is kept
        ``keep_s`` seconds. The tenant's index keeps its latest ``index_max`` deliveries."""
        index = P + f"tenant:{delivery.tenant}:webhooks"
        pipe = self.r.pipeline(transaction=True)
        settled = delivery.state != "pending" or delivery.next_attempt_at is None
        keep = int(keep_s) if settled else None
        pipe.set(P + f"webhook:{delivery.subject}", delivery.model_dump_json(), ex=keep)
        if settled:
            pipe.zrem(P + "webhooks:due", delivery.subject)
        else:
            pipe.zadd(P + "webhooks:due", {delivery.subject: cast(float, delivery.next_attempt_at)})
        pipe.zadd(index, {delivery.subject: delivery.created_at})
        pipe.zremrangebyrank(index, 0, -index_max - 1)
        pipe.execute()

    def drop_webhook(self, subject: str) -> None:
        """Forget a due notification whose subject is gone."""
        self.r.zrem(P + "webhooks:due", subject)

    def list_deliveries(self, tenant: str, *, limit: int = 20) -> list[WebhookDelivery]:
        """The tenant's latest deliveries, newest first (settled ones expire after a while)."""
        subjects = cast(list[str], self.r.zrevrange(P + f"tenant:{tenant}:webhooks", 0, limit - 1))
        pipe = self.r.pipeline(transaction=False)
        for subject in subjects:
            pipe.get(P + f"webhook:{subject}")
        found = [WebhookDelivery.model_validate_json(raw) for raw in pipe.execute() if raw is not None]
        return [d for d in found if d.tenant == tenant]
