"""Webhooks on the real API and Redis with no worker (the session fixture ``api``, which allows no
internal network): what ``webhook_url`` may be at submit time, the signing secret, and that each
path to a final status makes the notification due in the store. Delivery itself, by a worker:
``tests/e2e/test_webhooks.py``."""

from __future__ import annotations

import time

import pytest

from service.core.store import Store
from tests.e2e.stack import Api
from tests.service.test_api import job_keys, queued_messages, valid_spec
from tests.service.test_experiments_api import exp_keys, grid

REFUSED = [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
    ("http://[fe80::1]/hook", "link-local"),
    ("http://localhost/hook", "loopback"),
    ("http://127.0.0.1:8000/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "not a public address"),
    ("http://192.168.0.10/hook", "not a public address"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("ftp://example.com/hook", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("https://user:pass@example.com/hook", "credentials"),
    ("https://token@example.com/hook", "credentials"),
    ("http:///hook", "no host"),
    ("http://example.com:99999/hook", "not a valid URL"),
    ("http://example.com/" + "a" * 2000, "2000 characters"),
]


def due(api: Api) -> set[str]:
    """The jobs and experiments whose notification is pending (due now or later)."""
    return set(Store(api.redis).due_webhooks(time.time() + 1e9, 10000))


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_a_refused_webhook_url_is_a_422_naming_it_and_stores_nothing(api: Api, url: str, why: str) -> None:
    client = api.client("alice")
    before = (job_keys(api), exp_keys(api), queued_messages(api))
    response = client.post("/v1/jobs", json=valid_spec(webhook_url=url))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "webhook_url" and why in error["message"], error
    if why in ("link-local", "loopback", "not a public address"):  # the message says which setting allows it
        assert "CHILDTUNE_WEBHOOK_ALLOW_NETWORKS" in error["message"]
    response = client.post("/v1/experiments", json=grid(webhook_url=url))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "webhook_url" and why in response.json()["error"]["message"]
    # One in the experiment's base is a job's: the cells name it.
    response = client.post("/v1/experiments", json=grid(base=valid_spec(webhook_url=url)))
    assert response.status_code == 422, response.text
    assert "webhook_url" in response.json()["error"]["message"]
    assert (job_keys(api), exp_keys(api), queued_messages(api)) == before


def test_a_public_address_is_accepted_and_kept_in_the_spec(api: Api) -> None:
    client = api.client("alice")
    url = "https://93.184.216.34:8443/hooks/childtune?x=1"  # an IP literal: nothing to look up
    response = client.post("/v1/jobs", json=valid_spec(webhook_url=url))
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["webhook_url"] == url
    response = client.post("/v1/experiments", json=grid(webhook_url=url))
    assert response.status_code == 201, response.text


def test_the_signing_secret_is_made_once_per_tenant_and_rotates(api: Api) -> None:
    alice, bob = api.client("alice"), api.client("bob")
    first = alice.get("/v1/webhooks/secret")
    assert first.status_code == 200, first.text
    secret = first.json()["secret"]
    assert secret.startswith("whsec_") and len(secret) == 6 + 64
    assert first.json()["signature_header"] == "Childtune-Signature"
    assert alice.get("/v1/webhooks/secret").json()["secret"] == secret
    assert bob.get("/v1/webhooks/secret").json()["secret"] != secret
    rotated = alice.post("/v1/webhooks/secret/rotate")
    assert rotated.status_code == 200 and rotated.json()["secret"] not in (secret, None)
    assert alice.get("/v1/webhooks/secret").json()["secret"] == rotated.json()["secret"]
    assert api.client(None).get("/v1/webhooks/secret").status_code == 401


def test_every_path_to_a_final_status_makes_one_notification_due(api: Api) -> None:
    """A queued job's cancel (the API) and an experiment's close make their notification due in
    the same step as the status change; a job without a webhook_url adds nothing. (The worker's
    finish and the reaper's settle go through the same transition: tests/e2e/test_webhooks.py.)"""
    client = api.client("alice")
    hooked = client.post("/v1/jobs", json=valid_spec(webhook_url="http://93.184.216.34/a")).json()["id"]
    plain = client.post("/v1/jobs", json=valid_spec()).json()["id"]
    assert hooked not in due(api)  # not before it finishes
    for job_id in (hooked, plain):
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert hooked in due(api) and plain not in due(api)
    exp = client.post("/v1/experiments", json=grid(webhook_url="http://93.184.216.34/e")).json()
    assert exp["id"] not in due(api)
    cancelled = client.post(f"/v1/experiments/{exp['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and exp["id"] in due(api)
    # Its jobs carry no webhook_url of their own (the base has none): nothing due for them.
    assert not {job["id"] for job in cancelled["jobs"]} & due(api)
    # A second cancel of a job finds it finished: no second notification.
    Store(api.redis).drop_webhook(hooked)  # as if delivered
    assert client.post(f"/v1/jobs/{hooked}/cancel").status_code == 409
    assert hooked not in due(api)


def test_a_run_ending_makes_it_due_and_a_requeue_does_not(api: Api) -> None:
    """The worker's finish and the reaper's settle both end a run with Store.finish_run; a
    requeue (worker shutdown, lost worker) is not an end."""
    store = Store(api.redis)
    client = api.client("alice")
    job_ids = [
        client.post("/v1/jobs", json=valid_spec(webhook_url="http://93.184.216.34/r")).json()["id"]
        for _ in range(2)
    ]
    for job_id in job_ids:
        assert store.transition(job_id, "running", allowed=("queued",), run_id="run-1").ok
    assert store.requeue(job_ids[0], "run-1").ok and job_ids[0] not in due(api)
    assert store.transition(job_ids[0], "running", allowed=("queued",), run_id="run-2").ok
    assert not store.finish_run(job_ids[0], "run-1", "failed").ok  # an old run: no end, nothing due
    assert job_ids[0] not in due(api)
    assert store.finish_run(job_ids[0], "run-2", "failed", "boom").ok
    assert store.finish_run(job_ids[1], "run-1", "succeeded").ok
    assert set(job_ids) <= due(api)


def test_deliveries_are_listed_per_tenant(api: Api) -> None:
    alice = api.client("alice")
    listed = alice.get("/v1/webhooks/deliveries")
    assert listed.status_code == 200 and isinstance(listed.json()["data"], list)
    assert alice.get("/v1/webhooks/deliveries", params={"subject": "job-0123456789abcdef"}).json() == {
        "data": []
    }
    bad = alice.get("/v1/webhooks/deliveries", params={"subject": "../etc"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "subject"
