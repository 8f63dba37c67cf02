"""Webhook deliveries on a real stack (redis-server, the API, a Celery worker running the training
program) to real HTTP receivers on loopback, which verify each request's signature with the
tenant's secret fetched over REST, as a customer's receiver would (docs/service.md).

The API allows 127.0.0.0/8 (``CHILDTUNE_WEBHOOK_ALLOW_NETWORKS``), the worker only 127.0.0.1:
a URL at 127.0.0.2 passes the submit-time check and is refused at delivery time. The worker
consumes only ``cpu-x1``, so a 2-rank job stays queued until it is cancelled: a finished job
without training. Retries wait 0.2 s, 0.4 s, ... for at most 4 s (test settings)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core import env as names
from service.core.store import Store
from tests.e2e.stack import (
    KEYS,
    RedisServer,
    model_root,
    service_env,
    start_api,
    start_worker,
    stop,
    wait_for,
    write_tiny_model,
)

TOLERANCE_S = 300  # a receiver refuses a signature older than this (a replay)


def verify(secret: str, body: bytes, header: str, tolerance_s: float = TOLERANCE_S) -> bool:
    """The receiver's check, as docs/service.md shows it."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - stamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An HTTP server in a thread: answers each path's scripted statuses in turn, then 200; a
    request whose signature does not verify gets 400."""

    host: str
    secret: str = ""
    script: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = verify(receiver.secret, body, self.headers.get("Childtune-Signature", ""))
                with receiver.lock:
                    statuses = receiver.script.get(self.path, [])
                    status = (statuses.pop(0) if statuses else 200) if ok else 400
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, body, ok, status, time.time()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}{path}"

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class HookStack:
    url: str
    model: Path
    receiver: Receiver
    elsewhere: Receiver  # on 127.0.0.2: allowed by the API, refused by the worker
    logs: Path
    redis_url: str

    def pending(self) -> list[str]:
        """Jobs and experiments whose notification is still to be sent (now or later)."""
        return Store.from_url(self.redis_url, timeout_s=5).due_webhooks(time.time() + 1e9, 10000)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {KEYS['alice']}"}, timeout=30
        )

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs.glob("*.log")
        )


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookStack]:
    base = tmp_path_factory.mktemp("webhooks")
    redis_server = RedisServer(base / "redis")
    redis_server.start()
    env = service_env(redis_server.url, base / "artifacts", **{names.WEBHOOK_ALLOW_NETWORKS: "127.0.0.0/8"})
    worker_env = {
        **env,
        names.WEBHOOK_ALLOW_NETWORKS: "127.0.0.1/32",
        names.QUEUES: "cpu-x1",
        names.WEBHOOK_RETRY_BASE_S: "0.2",
        names.WEBHOOK_RETRY_WINDOW_S: "4",
    }
    receiver, elsewhere = Receiver("127.0.0.1"), Receiver("127.0.0.2")
    api, url = start_api(env, base / "api.log")
    worker = None
    try:
        worker = start_worker(worker_env, base / "worker.log", "hooks@test", url)
        receiver.start()
        elsewhere.start()
        model = write_tiny_model(model_root(env) / "tiny")
        stack = HookStack(url, model, receiver, elsewhere, base, redis_server.url)
        with stack.client() as client:  # the tenant's secret, over REST
            secret = client.get("/v1/webhooks/secret").json()["secret"]
        receiver.secret = elsewhere.secret = secret
        yield stack
    finally:
        receiver.stop()
        elsewhere.stop()
        if worker is not None:
            stop(worker)
        stop(api)
        redis_server.stop()


def job_spec(model: Path | str, webhook_url: str, *, ranks: int = 1, steps: int = 2) -> dict[str, Any]:
    return {
        "model": str(model),
        "dataset": {"preset": "glue/rte", "max_train_examples": 16, "max_eval_examples": 8},
        "childtuning": {"mode": "childtuning-f", "reserve_p": 0.5},
        "hyperparameters": {"max_steps": steps, "batch_size": 8, "max_seq_length": 32, "eval_every": steps},
        "resources": {"num_ranks": ranks, "zero_stage": 2, "device": "cpu"},
        "webhook_url": webhook_url,
    }


def webhook_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    return [e for e in events if e.get("type") == "webhook"]


def delivery(client: httpx.Client, subject: str) -> dict[str, Any] | None:
    found = client.get("/v1/webhooks/deliveries", params={"subject": subject}).json()["data"]
    return found[0] if found else None


def test_a_finished_job_delivers_one_signed_event(hooks: HookStack) -> None:
    started = time.monotonic()
    client = hooks.client()
    created = client.post("/v1/jobs", json=job_spec(hooks.model, hooks.receiver.url("/done")))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    got = wait_for(lambda: hooks.receiver.on("/done"), 240, "the job's notification")
    request = got[0]
    assert request.verified and request.answered == 200, hooks.log_tail()
    event = request.event
    assert event["type"] == "job.succeeded" and event["id"] == job_id and event["status"] == "succeeded"
    assert event["delivery_id"] == request.headers["childtune-delivery"]
    assert request.headers["childtune-event"] == "job.succeeded"
    assert request.headers["content-type"] == "application/json"
    assert event["error"] is None and event["final_metrics"]["step"] == 2
    assert "tenant" not in event and abs(event["created"] - time.time()) < 300
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and event["final_metrics"] == job["final_metrics"]
    # The attempt is in the job's events; the delivery is settled, so nothing more is sent.
    attempts = wait_for(lambda: webhook_events(client, job_id), 10, "the attempt in the events")
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [(1, 200, "delivered")]
    assert attempts[0]["delivery_id"] == event["delivery_id"]
    record = delivery(client, job_id)
    assert record is not None and record["state"] == "delivered" and record["event"] == event
    assert job_id not in hooks.pending()  # settled: no worker will send it again
    assert len(hooks.receiver.on("/done")) == 1
    # The receiver refuses a replay (an old timestamp, even correctly signed) and a changed body.
    secret = hooks.receiver.secret
    old = int(time.time()) - 2 * TOLERANCE_S
    old_signature = hmac.new(secret.encode(), f"{old}.".encode() + request.body, hashlib.sha256).hexdigest()
    header = request.headers["childtune-signature"]
    for body, signature in (
        (request.body, f"t={old},v1={old_signature}"),
        (request.body.replace(b"succeeded", b"failed"), header),
        (request.body, header.replace("v1=", "v1=0")),
    ):
        replay = httpx.post(
            hooks.receiver.url("/replay"),
            content=body,
            headers={"Childtune-Signature": signature},
            timeout=10,
        )
        assert replay.status_code == 400
    assert all(not r.verified for r in hooks.receiver.on("/replay"))
    print(f"job to notification: {time.monotonic() - started:.1f} s")


def test_a_failing_receiver_is_retried_with_backoff(hooks: HookStack) -> None:
    client = hooks.client()
    hooks.receiver.script["/flaky"] = [500, 500]
    # Two ranks: a queue this worker does not consume, so the job waits until it is cancelled.
    job_id = client.post(
        "/v1/jobs", json=job_spec(hooks.model, hooks.receiver.url("/flaky"), ranks=2)
    ).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    got = wait_for(
        lambda: len(hooks.receiver.on("/flaky")) >= 3 and hooks.receiver.on("/flaky"), 30, "3 attempts"
    )
    assert [r.answered for r in got] == [500, 500, 200] and all(r.verified for r in got)
    assert len({r.body for r in got}) == 1  # the same event each time
    assert got[0].event["type"] == "job.cancelled" and got[0].event["id"] == job_id
    assert got[1].at - got[0].at >= 0.2 * 0.9 and got[2].at - got[1].at >= 0.4 * 0.9  # backoff
    attempts = wait_for(
        lambda: len(webhook_events(client, job_id)) >= 3 and webhook_events(client, job_id), 10, "3 events"
    )
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 200, "delivered"),
    ]
    assert attempts[0]["error"] == "HTTP 500" and attempts[2]["error"] is None
    record = delivery(client, job_id)
    assert record is not None and record["state"] == "delivered" and len(record["attempts"]) == 3


def test_an_address_refused_at_delivery_time_gets_no_request(hooks: HookStack) -> None:
    """127.0.0.2 passed the API's check; the worker's own check refuses it (as when a name's DNS
    answer changed after the submit): each attempt is recorded with the reason, none is sent,
    and the delivery is given up at the end of the retry window."""
    client = hooks.client()
    url = hooks.elsewhere.url("/x")
    created = client.post("/v1/jobs", json=job_spec(hooks.model, url, ranks=2))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    record = wait_for(
        lambda: (d := delivery(client, job_id)) is not None and d["state"] == "failed" and d, 30, "giving up"
    )
    attempts = record["attempts"]
    assert len(attempts) >= 2 and attempts[-1]["outcome"] == "failed"
    for attempt in attempts:
        assert attempt["status_code"] is None
        assert attempt["error"].startswith("refused, no request sent: 127.0.0.2 is a loopback address")
        assert "CHILDTUNE_WEBHOOK_ALLOW_NETWORKS" in attempt["error"]
    # No attempt starts past the window (4 s), give or take a pass on a loaded machine.
    assert attempts[-1]["at"] - record["created_at"] <= 4 + 5
    events = webhook_events(client, job_id)
    assert [e["attempt"] for e in events] == list(range(1, len(attempts) + 1))
    assert hooks.elsewhere.received == []


def test_an_experiment_notifies_when_it_finishes(hooks: HookStack) -> None:
    client = hooks.client()
    body = {
        "name": "hooked",
        "base": job_spec(hooks.model, hooks.receiver.url("/job-of-exp"), ranks=2),
        "axes": {"hyperparameters.seed": [1, 2]},
        "max_parallel": 1,
        "webhook_url": hooks.receiver.url("/exp"),
    }
    created = client.post("/v1/experiments", json=body)
    assert created.status_code == 201, created.text
    exp_id = created.json()["id"]
    job_ids = [job["id"] for job in created.json()["jobs"]]
    assert client.post(f"/v1/experiments/{exp_id}/cancel").json()["status"] == "cancelled"
    got = wait_for(lambda: hooks.receiver.on("/exp"), 30, "the experiment's notification")
    event = got[0].event
    assert got[0].verified and event["type"] == "experiment.cancelled" and event["id"] == exp_id
    assert event["name"] == "hooked" and event["counts"]["cancelled"] == 2 and event["finished_at"]
    # Each job has the base's webhook_url: its own notification too.
    jobs = wait_for(
        lambda: len(hooks.receiver.on("/job-of-exp")) >= 2 and hooks.receiver.on("/job-of-exp"), 30, "2 jobs"
    )
    assert sorted(r.event["id"] for r in jobs) == sorted(job_ids)
    record = wait_for(lambda: delivery(client, exp_id), 10, "the experiment's delivery")
    assert record["state"] == "delivered" and record["attempts"][0]["status_code"] == 200
    assert exp_id not in hooks.pending() and len(hooks.receiver.on("/exp")) == 1
