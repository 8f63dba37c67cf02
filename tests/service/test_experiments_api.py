"""The experiments resource on a real API and Redis with no worker, so every message a request
sends stays in its queue where the test counts it: an invalid grid creates and sends nothing,
only max_parallel jobs are sent, the rest wait with no message, and cancel ends them all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.stack import KEYS, ROOT, Api
from tests.service.test_api import job_keys, queued_messages, valid_spec


def grid(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "d vs vanilla",
        "base": valid_spec(),
        "axes": {"childtuning.mode": ["vanilla", "childtuning-d"], "hyperparameters.seed": [1, 2]},
        "baseline": {"childtuning.mode": "vanilla"},
        "max_parallel": 1,
    }
    body.update(over)
    return body


def exp_keys(api: Api) -> int:
    return len(list(api.redis.scan_iter("ct:exp:*")))


def test_an_invalid_cell_refuses_the_whole_grid_and_sends_nothing(api: Api) -> None:
    client = api.client("alice")
    before = (job_keys(api), exp_keys(api), queued_messages(api))
    bad_p = grid(axes={"childtuning.reserve_p": [0.3, 1.5], "hyperparameters.seed": [1, 2]}, baseline=None)
    response = client.post("/v1/experiments", json=bad_p)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_experiment"
    assert error["field"] == "cell [childtuning.reserve_p=1.5, hyperparameters.seed=1]"
    assert "cell [childtuning.reserve_p=1.5, hyperparameters.seed=2]" in error["message"]
    assert "must be > 0 and <= 1 (got 1.5)" in error["message"]
    # A cell whose model the tenant may not name is found when resolving, still before anything.
    bad_model = grid(axes={"model": ["minilm-l6", "/etc"], "hyperparameters.seed": [1]}, baseline=None)
    response = client.post("/v1/experiments", json=bad_model)
    assert (
        response.status_code == 422
        and response.json()["error"]["field"] == "cell [model='/etc', hyperparameters.seed=1]"
    )
    too_big = grid(axes={"hyperparameters.seed": list(range(300))}, baseline=None)
    response = client.post("/v1/experiments", json=too_big)
    assert response.status_code == 422 and "at most 256" in response.json()["error"]["message"]
    not_an_axis = grid(baseline={"childtuning.reserve_p": 0.3})
    response = client.post("/v1/experiments", json=not_an_axis)
    assert (
        response.status_code == 422 and response.json()["error"]["field"] == "baseline.childtuning.reserve_p"
    )
    assert (job_keys(api), exp_keys(api), queued_messages(api)) == before


def test_only_max_parallel_jobs_are_sent_and_cancel_ends_them_all(api: Api) -> None:
    alice, bob = api.client("alice"), api.client("bob")
    messages = queued_messages(api)
    created = alice.post("/v1/experiments", json=grid(max_parallel=1))
    assert created.status_code == 201, created.text
    exp = created.json()
    assert exp["status"] == "queued" and len(exp["jobs"]) == 4
    assert [j["values"] for j in exp["jobs"]] == [
        {"childtuning.mode": m, "hyperparameters.seed": s}
        for m in ("vanilla", "childtuning-d")
        for s in (1, 2)
    ]
    assert exp["counts"]["queued"] == 4 and exp["counts"]["waiting"] == 3
    assert [j["phase"] for j in exp["jobs"]] == [None, "waiting", "waiting", "waiting"]
    assert queued_messages(api) == messages + 1  # one message: the waiting jobs hold no place in a queue
    assert [c["label"] for c in exp["cells"]] == [
        "childtuning.mode='vanilla'",
        "childtuning.mode='childtuning-d'",
    ]
    assert exp["cells"][0]["baseline"] and exp["cells"][1]["vs_baseline"]["verdict"] == "too few seeds"
    # Its jobs are ordinary jobs of the tenant, carrying the experiment id.
    first = alice.get(f"/v1/jobs/{exp['jobs'][0]['id']}").json()
    assert first["experiment_id"] == exp["id"] and first["spec"]["hyperparameters"]["seed"] == 1
    # Another tenant cannot see it, nor tell it from a missing one.
    for path in ("", "/curves", "/plots", "/plots/curves.png"):
        response = bob.get(f"/v1/experiments/{exp['id']}{path}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert bob.post(f"/v1/experiments/{exp['id']}/cancel").status_code == 404
    assert exp["id"] not in [e["id"] for e in bob.get("/v1/experiments").json()["data"]]
    assert exp["id"] in [e["id"] for e in alice.get("/v1/experiments").json()["data"]]
    # Cancel: every job, waiting or queued, is cancelled at once (none is running).
    cancelled = alice.post(f"/v1/experiments/{exp['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["cancel_requested"]
    assert body["counts"]["cancelled"] == 4 and body["counts"]["waiting"] == 0
    again = alice.post(f"/v1/experiments/{exp['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "experiment_finished"
    # Plots of an experiment with no score yet are still images.
    png = alice.get(f"/v1/experiments/{exp['id']}/plots/scores.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert (api.artifacts / "experiments" / exp["id"] / "plots" / "scores.png").is_file()
    missing = alice.get(f"/v1/experiments/{exp['id']}/plots/other.png")
    assert missing.status_code == 404 and "curves.png" in missing.json()["error"]["message"]


def test_cancelling_a_sent_job_gives_its_slot_to_the_next(api: Api) -> None:
    alice = api.client("alice")
    exp = alice.post("/v1/experiments", json=grid(max_parallel=2)).json()
    jobs = exp["jobs"]
    assert [j["phase"] for j in jobs] == [None, None, "waiting", "waiting"]
    messages = queued_messages(api)
    assert alice.post(f"/v1/jobs/{jobs[0]['id']}/cancel").status_code == 200
    after = alice.get(f"/v1/experiments/{exp['id']}").json()
    assert [j["status"] for j in after["jobs"]] == ["cancelled", "queued", "queued", "queued"]
    assert [j["phase"] for j in after["jobs"]][1:] == [None, None, "waiting"]
    assert queued_messages(api) == messages + 1
    alice.post(f"/v1/experiments/{exp['id']}/cancel")


def test_the_cli_names_the_bad_cell_of_a_grid_file_and_submits_nothing(api: Api, tmp_path: Path) -> None:
    import yaml

    bad = grid(axes={"childtuning.reserve_p": [0.3, 1.5], "hyperparameters.seed": [1]}, baseline=None)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(bad))
    env = {
        **os.environ,
        "CHILDTUNE_API_URL": api.url,
        "CHILDTUNE_API_KEY": KEYS["alice"],
        "PYTHONPATH": str(ROOT),
    }
    before = (job_keys(api), exp_keys(api), queued_messages(api))
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "experiment", "submit", str(path)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "cell [childtuning.reserve_p=1.5, hyperparameters.seed=1]" in out.stderr
    assert (job_keys(api), exp_keys(api), queued_messages(api)) == before
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(grid(max_parallel=1)))
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "experiment", "submit", str(good)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    exp_id = out.stdout.strip().splitlines()[-1].split()[0]
    assert exp_id.startswith("exp-") and "4 jobs" in out.stderr
    cancel = subprocess.run(
        [sys.executable, "-m", "service.cli", "experiment", "cancel", exp_id],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cancel.returncode == 0, cancel.stderr
    assert api.client("alice").get(f"/v1/experiments/{exp_id}").json()["status"] == "cancelled"
