"""The delivery of notifications: the event's body, one attempt, the worker's loop.

A due notification (``Store.claim_webhook``) is claimed for one attempt by one worker; the first
attempt builds the event from the final record and keeps that body for the retries. Each attempt
checks the URL's addresses again (:func:`~service.core.webhooks.guard.target`: DNS may have
changed; a refused address is a failed attempt, never a request) and POSTs to the address it
checked, signed (:mod:`service.core.webhooks.signing`). A 2xx answer delivers it; anything else is
retried after ``base * 2**(attempt - 1)`` seconds (capped at :data:`RETRY_CAP_S`) while within
``CHILDTUNE_WEBHOOK_RETRY_WINDOW_S`` of the event, then given up. This module sits above the
store, the experiments and the job directory: nothing of those imports it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

from service.core.contract.urls import url_problem
from service.core.contract.vocabulary import FINAL_STATUSES
from service.core.jobdir import json_safe
from service.core.records import ExperimentRecord, JobRecord, WebhookDelivery
from service.core.store import Store
from service.core.usecases.experiments import experiment_summary
from service.core.webhooks.guard import RESOLVE_TIMEOUT_S, Address, target
from service.core.webhooks.signing import signed_headers

if TYPE_CHECKING:
    from service.core.settings import Settings

__all__ = ["RETRY_CAP_S", "DeliveryLoop", "deliver_due", "delivery_id_of", "lease_s", "new_client"]

log = logging.getLogger(__name__)

RETRY_CAP_S = 600.0  # the longest wait between two attempts
KEEP_S = 7 * 24 * 3600  # how long a settled delivery stays listed
BATCH = 20  # due notifications a pass takes at most

# ------------------------------------------------------------------------------ the event


def delivery_id_of(subject: str) -> str:
    """A job or an experiment finishes once: its one notification's id (a receiver dedups on it)."""
    return f"dlv-{subject}"


def _job_event(record: JobRecord) -> dict[str, Any]:
    return {
        "type": f"job.{record.status}",
        "id": record.id,
        "status": record.status,
        "error": record.error,
        "experiment_id": record.experiment_id,
        "step": record.step,
        "total_steps": record.total_steps,
        "final_metrics": record.final_eval,
        "best_metrics": record.best_eval,
        "metadata": record.spec.get("metadata") or {},
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
    }


def _experiment_event(store: Store, experiment: ExperimentRecord) -> dict[str, Any]:
    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    summary = experiment_summary(store, experiment)  # the API's summary, evaluations included
    failed = next((job for job in jobs if job is not None and job.status == "failed"), None)
    return {
        "type": f"experiment.{summary['status']}",
        "id": experiment.id,
        "name": experiment.name,
        "status": summary["status"],
        "error": f"job {failed.id} failed: {failed.error}" if failed is not None else None,
        "counts": {k: v for k, v in summary["counts"].items() if k != "waiting"},
        "metric": summary["metric"],
        "best_cell": summary["best_cell"],
        "cells": [
            {
                "label": cell.get("label"),
                "n": cell.get("n"),
                "mean": cell.get("mean"),
                "std": cell.get("std"),
                "verdict": (cell.get("vs_baseline") or {}).get("verdict"),
            }
            for cell in summary["cells"]
        ],
        "created_at": experiment.created_at,
        "finished_at": summary["finished_at"],
    }


def _new_delivery(store: Store, subject: str) -> WebhookDelivery | None:
    """The notification of a finished job or closed experiment, its body fixed from now on."""
    event: dict[str, Any]
    if subject.startswith("exp-"):
        experiment = store.get_experiment(subject)
        if experiment is None:
            return None
        url, tenant = experiment.spec.get("webhook_url"), experiment.tenant
        event = _experiment_event(store, experiment)
    else:
        record = store.get_job(subject)
        if record is None or record.status not in FINAL_STATUSES:
            return None
        url, tenant = record.spec.get("webhook_url"), record.tenant
        event = _job_event(record)
    if not isinstance(url, str):
        return None
    now = time.time()
    delivery_id = delivery_id_of(subject)
    body = {"type": event.pop("type"), "delivery_id": delivery_id, "created": now, **event}
    text = json.dumps(json_safe(body), separators=(",", ":"), default=str)
    return WebhookDelivery(
        id=delivery_id, subject=subject, tenant=tenant, url=url, type=body["type"], body=text, created_at=now
    )


# ------------------------------------------------------------------------------ an attempt


def new_client(settings: Settings) -> httpx.Client:
    """The HTTP client of the deliveries: no redirects, no proxies from the environment (the
    request goes to the address that was checked), a short timeout."""
    return httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)


def _post(client: httpx.Client, delivery: WebhookDelivery, secret: str, ip: Address) -> int:
    """One POST of the delivery's body to ``ip`` (the address checked), signed now; its status."""
    url = httpx.URL(delivery.url)
    host = url.raw_host.decode("ascii")
    body = delivery.body.encode()
    headers = {
        "Host": url.netloc.decode("ascii"),
        **signed_headers(secret, int(time.time()), body, delivery_id=delivery.id, event=delivery.type),
    }
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    pinned = url.copy_with(host=str(ip))
    with client.stream("POST", pinned, content=body, headers=headers, extensions=extensions) as answer:
        return answer.status_code  # the answer's body is not read


def _attempt(store: Store, settings: Settings, client: httpx.Client, subject: str) -> str:
    """One attempt of a claimed notification; returns its outcome (delivered, retrying, failed,
    dropped)."""
    delivery = store.get_delivery(subject)
    if delivery is not None and delivery.state != "pending":
        store.drop_webhook(subject)  # settled already (a stale due entry)
        return "dropped"
    if delivery is None:
        delivery = _new_delivery(store, subject)
        if delivery is None:
            log.warning("webhook: %s has no finished record with a webhook_url; dropped", subject)
            store.drop_webhook(subject)
            return "dropped"
    number = len(delivery.attempts) + 1
    started = time.time()
    status_code: int | None = None
    problem = url_problem(delivery.url)
    addresses: list[Address] = []
    if problem is None:
        addresses, problem = target(delivery.url, settings.webhook_networks)
    if problem is not None:
        error: str | None = f"refused, no request sent: {problem}"
    else:
        secret, _ = store.webhook_secret(delivery.tenant)
        try:
            status_code = _post(client, delivery, secret, addresses[0])
            error = None
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
    delivered = status_code is not None and 200 <= status_code < 300
    if status_code is not None and not delivered:
        error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
    now = time.time()
    delay = min(RETRY_CAP_S, settings.webhook_retry_base_s * 2 ** (number - 1))
    if delivered:
        outcome, next_at = "delivered", None
    elif now + delay > delivery.created_at + settings.webhook_retry_window_s:
        outcome, next_at = "failed", None
    else:
        outcome, next_at = "retrying", now + delay
    attempt = {
        "attempt": number,
        "at": started,
        "status_code": status_code,
        "error": error,
        "duration_s": round(now - started, 3),
        "outcome": outcome,
        "next_attempt_at": next_at,
    }
    state = {"delivered": "delivered", "failed": "failed"}.get(outcome, "pending")
    delivery = delivery.model_copy(
        update={"attempts": [*delivery.attempts, attempt], "state": state, "next_attempt_at": next_at}
    )
    store.save_delivery(delivery, keep_s=KEEP_S)
    if not subject.startswith("exp-"):
        record = {"type": "webhook", "delivery_id": delivery.id, "event": delivery.type, **attempt}
        record["time"] = record.pop("at")
        store.append_event(subject, record)
    log.info("webhook %s attempt %d: %s (%s)", delivery.id, number, outcome, error or status_code)
    return outcome


# ------------------------------------------------------------------------------ the loop


def lease_s(settings: Settings) -> float:
    """How long a claimed attempt may take before another worker may try it: DNS, connect,
    send and the answer's head, each bounded."""
    return RESOLVE_TIMEOUT_S + 4 * settings.webhook_timeout_s + 10.0


def deliver_due(
    store: Store, settings: Settings, *, client: httpx.Client | None = None, limit: int = BATCH
) -> list[tuple[str, str]]:
    """One pass: an attempt for each due notification this worker claims. Returns (subject,
    outcome) pairs."""
    own = client is None
    client = client or new_client(settings)
    done: list[tuple[str, str]] = []
    try:
        for subject in store.due_webhooks(time.time(), limit):
            if store.claim_webhook(subject, time.time(), lease_s(settings)):
                done.append((subject, _attempt(store, settings, client, subject)))
    finally:
        if own:
            client.close()
    return done


class DeliveryLoop(threading.Thread):
    """A worker's deliveries: a pass every heartbeat interval, sooner when a retry is due."""

    def __init__(self, store: Store, settings: Settings, stop: threading.Event) -> None:
        super().__init__(name="childtune-webhooks", daemon=True)
        self.store, self.settings, self.stop = store, settings, stop

    def run(self) -> None:
        interval = self.settings.heartbeat_interval_s
        with new_client(self.settings) as client:
            while not self.stop.is_set():
                wait = interval
                try:
                    deliver_due(self.store, self.settings, client=client)
                    due = self.store.next_webhook_at()
                    if due is not None:
                        wait = min(interval, max(0.05, due - time.time()))
                except Exception as exc:  # keep going through a Redis restart
                    log.warning("webhooks: %s", exc)
                self.stop.wait(wait)
