"""Webhook notifications: a signed JSON POST when a job or an experiment finishes.

- **The field.** A job spec and an experiment spec may carry ``webhook_url``. Its shape
  (http or https, at most :data:`MAX_URL` characters, no ``user:password@``) is part of the
  contract (:func:`url_problem`); at submit time the API also resolves its host and refuses it
  when an address is internal (:func:`check_url`, called by ``resolve_spec`` and the experiment's
  create): loopback, link-local (169.254.0.0/16 and fe80::/10, where cloud metadata answers),
  private, shared or reserved (anything not globally routable), or one of this machine's own
  addresses, unless the address is inside a network of ``CHILDTUNE_WEBHOOK_ALLOW_NETWORKS``.
  Unspecified and multicast addresses are never allowed.
- **Due.** The status change to a final one (``Store.transition``'s script) and the first close
  of an experiment (``Store.close_experiment``) add the job or experiment id to the due set in
  the same atomic step, so no path to a final status can finish without its notification.
- **Delivery.** Every worker runs a :class:`DeliveryLoop` thread (started by its heartbeat
  thread, apart from it: a slow receiver never delays a heartbeat). It claims each due
  notification for one attempt (``Store.claim_webhook``: one worker at a time, and a worker that
  dies mid-attempt leaves it due again after the claim's lease), builds the event from the final
  record on the first attempt and keeps that body for the retries, checks the URL's addresses
  again (DNS may have changed; a refused address is a failed attempt, never a request), and
  POSTs to the address it checked (no second lookup), with ``follow_redirects=False`` and a
  timeout of ``CHILDTUNE_WEBHOOK_TIMEOUT_S``. A 2xx answer delivers it; anything else is retried
  after ``base * 2**(attempt - 1)`` seconds (capped at :data:`RETRY_CAP_S`) while within
  ``CHILDTUNE_WEBHOOK_RETRY_WINDOW_S`` of the event, then given up. Each attempt is recorded in
  the delivery (``GET /v1/webhooks/deliveries``) and, for a job, in its events stream.
- **Signature.** ``Childtune-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
  under the tenant's secret (``GET /v1/webhooks/secret``); ``t`` is the attempt's time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from service.core import env
from service.core.contract.urls import SIGNATURE_HEADER, url_problem
from service.core.contract.vocabulary import MAX_WEBHOOK_URL as MAX_URL

if TYPE_CHECKING:
    import httpx

    from service.core.settings import Settings
    from service.core.store import ExperimentRecord, JobRecord, Store, WebhookDelivery

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "MAX_URL",
    "RETRY_CAP_S",
    "SIGNATURE_HEADER",
    "DeliveryLoop",
    "address_problem",
    "check_url",
    "deliver_due",
    "delivery_id_of",
    "own_addresses",
    "sign",
    "url_problem",
]

log = logging.getLogger(__name__)

DELIVERY_HEADER = "Childtune-Delivery"
EVENT_HEADER = "Childtune-Event"
USER_AGENT = "childtune-webhooks/1"
RETRY_CAP_S = 600.0  # the longest wait between two attempts
KEEP_S = 7 * 24 * 3600  # how long a settled delivery stays listed
RESOLVE_TIMEOUT_S = 5.0
BATCH = 20  # due notifications a pass takes at most
SUBMIT_CACHE_S = 10.0  # one submit-time check of a URL serves an experiment's cells

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HINT = (
    "webhooks go only to public addresses; an operator allows internal networks with "
    f"{env.WEBHOOK_ALLOW_NETWORKS} (CIDRs, e.g. 10.0.0.0/8)"
)

# ------------------------------------------------------------------------------ the URL


_OWN: tuple[float, frozenset[Address]] = (0.0, frozenset())
_OWN_LOCK = threading.Lock()
_FIB_ADDR = re.compile(r"[|+]-- (\d+\.\d+\.\d+\.\d+)")


def _read_own_addresses() -> set[Address]:
    found: set[Address] = set()
    try:  # IPv4: the kernel's local routes ("/32 host LOCAL" under an address)
        last = None
        with open("/proc/net/fib_trie") as lines:
            for line in lines:
                match = _FIB_ADDR.search(line)
                if match:
                    last = match.group(1)
                elif last and "/32 host LOCAL" in line:
                    found.add(ipaddress.ip_address(last))
    except OSError:
        pass
    try:  # IPv6: one address a line, 32 hex digits first
        with open("/proc/net/if_inet6") as lines:
            for line in lines:
                digits = line.split()[0]
                found.add(ipaddress.ip_address(":".join(digits[i : i + 4] for i in range(0, 32, 4))))
    except (OSError, IndexError, ValueError):
        pass
    try:  # elsewhere, and as a complement: what this host's name resolves to
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(_address(str(info[4][0])))
    except (OSError, ValueError):
        pass
    return found


def own_addresses(max_age_s: float = 60.0) -> frozenset[Address]:
    """This machine's own addresses (read again once a minute: interfaces change)."""
    global _OWN
    with _OWN_LOCK:
        if time.monotonic() - _OWN[0] > max_age_s:
            _OWN = (time.monotonic(), frozenset(_read_own_addresses()))
        return _OWN[1]


def _address(text: str) -> Address:
    return ipaddress.ip_address(text.split("%", 1)[0])  # a link-local v6 may carry a zone (%eth0)


def address_problem(ip: Address, allowed: Sequence[Network]) -> str | None:
    """What kind of address ``ip`` is when a webhook may not go there (``"a loopback
    address"``), else None; ``allowed``: the operator's networks."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if any(ip in network for network in allowed):
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if ip in own_addresses():
        return "one of this machine's own addresses"
    if not ip.is_global:
        return "not a public address (private, shared or reserved)"
    return None


_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def _resolve(host: str, port: int, timeout_s: float) -> list[Address]:
    """The host's addresses (an IP literal is its own); raises OSError or TimeoutError."""
    try:
        return [_address(host)]
    except ValueError:
        pass
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except FutureTimeout:
        raise TimeoutError(f"{host} did not resolve within {timeout_s:.0f} s") from None
    found: list[Address] = []
    for info in infos:
        ip = _address(str(info[4][0]))
        if ip not in found:
            found.append(ip)
    return found


def _target(url: str, allowed: Sequence[Network]) -> tuple[list[Address], str | None]:
    """The URL's addresses, and why it is refused (None when every address is allowed)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = _resolve(host, port, RESOLVE_TIMEOUT_S)
    except TimeoutError as exc:
        return [], str(exc)
    except (OSError, UnicodeError) as exc:
        return [], f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})"
    if not addresses:
        return [], f"{host} resolves to no address"
    for ip in addresses:
        kind = address_problem(ip, allowed)
        if kind is not None:
            where = f"{ip} is" if host == str(ip) else f"{host} resolves to {ip},"
            never = kind in ("the unspecified address", "a multicast address")
            return addresses, f"{where} {kind}" + ("" if never else f": {_HINT}")
    return addresses, None


_CHECKED: dict[tuple[str, str], tuple[float, str | None]] = {}
_CHECKED_LOCK = threading.Lock()


def check_url(url: str, settings: Settings) -> str | None:
    """At submit time: why ``url`` is refused (its shape, or an address it resolves to), with
    the setting that allows internal networks; None when it is accepted."""
    problem = url_problem(url)
    if problem is not None:
        return problem
    key = (url, settings.webhook_allow_networks)
    now = time.monotonic()
    with _CHECKED_LOCK:
        cached = _CHECKED.get(key)
        if cached is not None and now - cached[0] < SUBMIT_CACHE_S:
            return cached[1]
    _, answer = _target(url, settings.webhook_networks)
    with _CHECKED_LOCK:
        if len(_CHECKED) > 1000:
            _CHECKED.clear()
        _CHECKED[key] = (now, answer)
    return answer


# ------------------------------------------------------------------------------ the event


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` signature: hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


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
    from service.core.experiments import summarize

    jobs = store.get_jobs(entry["id"] for entry in experiment.jobs)
    summary = summarize(experiment, jobs)
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
    from service.core.jobdir import json_safe
    from service.core.store import FINAL_STATUSES, WebhookDelivery

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


# ------------------------------------------------------------------------------ delivery


def new_client(settings: Settings) -> httpx.Client:
    """The HTTP client of the deliveries: no redirects, no proxies from the environment (the
    request goes to the address that was checked), a short timeout."""
    import httpx

    return httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)


def _post(client: httpx.Client, delivery: WebhookDelivery, secret: str, ip: Address) -> int:
    """One POST of the delivery's body to ``ip`` (the address checked), signed now; its status."""
    import httpx

    url = httpx.URL(delivery.url)
    host = url.raw_host.decode("ascii")
    body = delivery.body.encode()
    stamp = int(time.time())
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: f"t={stamp},v1={sign(secret, stamp, body)}",
        DELIVERY_HEADER: delivery.id,
        EVENT_HEADER: delivery.type,
    }
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    pinned = url.copy_with(host=str(ip))
    with client.stream("POST", pinned, content=body, headers=headers, extensions=extensions) as answer:
        return answer.status_code  # the answer's body is not read


def _attempt(store: Store, settings: Settings, client: httpx.Client, subject: str) -> str:
    """One attempt of a claimed notification; returns its outcome (delivered, retrying, failed,
    dropped)."""
    import httpx

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
        addresses, problem = _target(delivery.url, settings.webhook_networks)
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
