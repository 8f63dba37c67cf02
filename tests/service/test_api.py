"""The REST API against a real Redis and a real uvicorn process: auth, tenants, validation, files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.core.settings import ALL_QUEUES
from tests.e2e.stack import Api

ROOT = Path(__file__).resolve().parents[2]


def valid_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "minilm-l6",
        "dataset": {"preset": "glue/rte", "max_train_examples": 32},
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {"max_steps": 2, "batch_size": 8},
        "resources": {"num_ranks": 1, "device": "cpu"},
    }
    spec.update(over)
    return spec


def queued_messages(api: Api) -> int:
    total = 0
    for queue in ALL_QUEUES:
        total += int(api.redis.llen(queue))  # type: ignore[arg-type]
    return total


def job_keys(api: Api) -> int:
    return len(list(api.redis.scan_iter("ct:job:*")))


def test_missing_and_wrong_keys_answer_401(api: Api) -> None:
    for client in (api.client(None), api.client(None)):
        response = client.get("/v1/jobs")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    wrong = api.client(None)
    wrong.headers["Authorization"] = "Bearer not-a-key"
    response = wrong.get("/v1/jobs")
    assert response.status_code == 401 and "unknown API key" in response.json()["error"]["message"]
    assert api.client("alice").get("/v1/jobs").status_code == 200


def test_a_tenant_sees_only_its_own_jobs_and_files(api: Api) -> None:
    alice, bob = api.client("alice"), api.client("bob")
    created = alice.post("/v1/jobs", json=valid_spec())
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["status"] == "queued" and created.json()["queue"] == "cpu-x1"
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 200
    for path in ("", "/metrics", "/events", "/checkpoints", "/mask"):
        response = bob.get(f"/v1/jobs/{job_id}{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert bob.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert job_id not in [j["id"] for j in bob.get("/v1/jobs").json()["data"]]
    assert job_id in [j["id"] for j in alice.get("/v1/jobs").json()["data"]]
    uploaded = alice.post("/v1/files", files={"file": ("t.csv", b"text,label\nhello,1\nbye,0\n")})
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]
    assert bob.get(f"/v1/files/{file_id}").status_code == 404
    assert bob.delete(f"/v1/files/{file_id}").status_code == 404
    assert alice.get(f"/v1/files/{file_id}").status_code == 200
    # Bob cannot train on Alice's file either.
    spec = valid_spec(
        dataset={
            "train_file": file_id,
            "eval_file": file_id,
            "text_column": "text",
            "label_column": "label",
            "task_type": "classification",
        }
    )
    refused = bob.post("/v1/jobs", json=spec)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "dataset.train_file"
    # A queued job is cancelled at once; a second cancel is a conflict.
    cancelled = alice.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert alice.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


BAD_SPECS = [
    ({"childtuning": {"mode": "childtuning-d", "reserve_p": 1.5}}, "childtuning.reserve_p"),
    ({"childtuning": {"mode": "childtuning-d", "reserve_p": 0}}, "childtuning.reserve_p"),
    ({"childtuning": {"mode": "childtuning-x", "reserve_p": 0.3}}, "childtuning.mode"),
    ({"dataset": {"preset": "glue/nope"}}, "dataset.preset"),
    ({"model": "bert-base-uncased"}, "model"),
    ({"model": "/no/such/model/folder"}, "model"),
    ({"hyperparameters": {"batch_size": 7}, "resources": {"num_ranks": 2}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"batch_size": 16}, "resources": {"num_ranks": 16}}, "resources.num_ranks"),
    ({"hyperparameters": {"batch_size": 32}, "resources": {"nodes": 2, "num_ranks": 32}},
     "resources.num_ranks"),
    ({"resources": {"nodes": 2, "num_ranks": 3}}, "resources.nodes"),
    ({"dataset": {"preset": "glue/rte", "subset_seed": 7}}, "dataset.subset_seed"),
    ({"resources": {"nodes": 0}}, "resources.nodes"),
    ({"resources": {"nodes": 65, "num_ranks": 65}}, "resources.nodes"),
    ({"dataset": {"train_file": "file-0123456789abcdef", "eval_file": "file-0123456789abcdef",
                  "text_column": "t", "label_column": "l", "task_type": "classification"}},
     "dataset.train_file"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field"), BAD_SPECS, ids=[f for _, f in BAD_SPECS])
def test_bad_specs_answer_422_naming_the_field_and_enqueue_nothing(
    api: Api, change: dict[str, Any], field: str
) -> None:
    client = api.client("alice")
    before_queue, before_jobs = queued_messages(api), job_keys(api)
    response = client.post("/v1/jobs", json=valid_spec(**change))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert error["message"]
    assert queued_messages(api) == before_queue
    assert job_keys(api) == before_jobs


def test_missing_columns_answer_422_and_enqueue_nothing(api: Api) -> None:
    client = api.client("alice")
    train = client.post(
        "/v1/files", files={"file": ("train.jsonl", b'{"sentence": "a b", "label": 1}\n' * 3)}
    )
    assert train.status_code == 201, train.text
    assert train.json()["columns"] == ["sentence", "label"] and train.json()["num_rows"] == 3
    file_id = train.json()["id"]
    dataset = {
        "train_file": file_id,
        "eval_file": file_id,
        "label_column": "label",
        "task_type": "classification",
    }
    before_queue, before_jobs = queued_messages(api), job_keys(api)
    response = client.post("/v1/jobs", json=valid_spec(dataset={**dataset, "text_column": "text"}))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "dataset.text_column"
    assert "sentence" in response.json()["error"]["message"]  # names the columns the file has
    assert (queued_messages(api), job_keys(api)) == (before_queue, before_jobs)
    # The same request with the right column is accepted and enqueued: the counts above can move.
    ok = client.post("/v1/jobs", json=valid_spec(dataset={**dataset, "text_column": "sentence"}))
    assert ok.status_code == 201, ok.text
    assert queued_messages(api) == before_queue + 1
    assert job_keys(api) == before_jobs + 1
    resolved = json.loads(str(api.redis.hget(f"ct:job:{ok.json()['id']}", "resolved_spec")))
    assert resolved["dataset"]["train_file"] == str(api.artifacts / "files" / file_id)
    assert resolved["dataset"]["file_format"] == "jsonl"
    # A file in use by a queued job cannot be deleted.
    assert client.delete(f"/v1/files/{file_id}").status_code == 409
    assert client.post(f"/v1/jobs/{ok.json()['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/files/{file_id}").status_code == 204
    assert client.get(f"/v1/files/{file_id}").status_code == 404


def test_malformed_bodies_and_uploads_are_4xx(api: Api) -> None:
    client = api.client("alice")
    before = queued_messages(api)
    not_json = client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["error"]["code"] == "invalid_request"
    assert client.post("/v1/jobs", json=[1, 2]).status_code == 422
    unknown = client.post("/v1/jobs", json=valid_spec(hyperparamters={}))
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "hyperparamters"
    ragged = client.post("/v1/files", files={"file": ("x.csv", b"text,label\nhello,1,extra\n")})
    assert ragged.status_code == 422 and "line 2" in ragged.json()["error"]["message"]
    empty = client.post("/v1/files", files={"file": ("x.tsv", b"")})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "file"
    big = client.post("/v1/files", files={"file": ("big.csv", b"text,label\n" + b"word,1\n" * 20000)})
    assert big.status_code == 413, big.text
    assert client.get("/v1/jobs", params={"status": "sleeping"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422
    assert client.get("/v1/jobs/job-0000000000000000/metrics").status_code == 404
    assert client.get("/v1/jobs/../../etc/passwd").status_code == 404
    assert queued_messages(api) == before


def test_job_list_pages_with_a_cursor_and_filters_by_status(api: Api) -> None:
    client = api.client("bob")
    ids = [client.post("/v1/jobs", json=valid_spec()).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        assert len(page["data"]) <= 2
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # newest first, each once (bob's jobs of other tests, made before these, may follow them)
    assert len(seen) == len(set(seen)) and seen[: len(ids)] == list(reversed(ids))
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()["data"]
    assert [j["id"] for j in cancelled if j["id"] in ids] == [ids[0]]
    for job_id in ids[1:]:
        client.post(f"/v1/jobs/{job_id}/cancel")


def test_health_readiness_metrics_and_openapi(api: Api) -> None:
    client = api.client(None)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "no_workers"  # no worker here
    assert ready.headers["Retry-After"]
    text = client.get("/metrics").text
    assert 'childtune_jobs{status="cancelled"}' in text
    assert 'childtune_queue_depth{queue="gpu-x1"}' in text
    assert "childtune_http_request_duration_seconds_bucket" in text
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/JobSpec"
    assert "JobSpec" in schema["components"]["schemas"] and body["examples"]
    assert client.get("/docs").status_code == 200


def test_the_service_package_imports_nothing_of_the_workers_the_method_or_torch() -> None:
    """The arrows point one way: every module of ``service`` (base, API, CLI) imports, and the
    app starts, without ``workers``, ``childtuning``, torch, transformers or DeepSpeed (the CLI's
    training commands import those inside the command)."""
    code = (
        "import sys, pkgutil, importlib, service\n"
        "for m in pkgutil.walk_packages(service.__path__, 'service.'): importlib.import_module(m.name)\n"
        "import service.api; service.api.create_app()\n"
        "bad = ('workers', 'childtuning', 'torch', 'transformers', 'deepspeed')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in bad)) or 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["none"], out.stdout + out.stderr


def test_production_refuses_the_development_key() -> None:
    code = "from service.core.settings import load_settings; load_settings()"
    for keys in ("", "childtune-dev-key:default"):
        env = {"CHILDTUNE_ENV": "production", "CHILDTUNE_API_KEYS": keys, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
        assert out.returncode != 0 and "CHILDTUNE_API_KEYS" in out.stderr, out.stderr
    env = {"CHILDTUNE_ENV": "production", "CHILDTUNE_API_KEYS": "s3cret:team", "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env).returncode == 0


def test_redis_down_answers_503_with_retry_after(tmp_path: Path) -> None:
    from tests.e2e.stack import RedisServer, service_env, start_api, stop

    server = RedisServer(tmp_path / "redis")
    server.start()
    proc, url = start_api(service_env(server.url, tmp_path / "artifacts"), tmp_path / "api.log")
    try:
        import httpx

        from tests.e2e.stack import KEYS

        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['alice']}"}, timeout=30)
        assert client.get("/v1/jobs").status_code == 200
        server.stop()
        for response in (
            client.get("/v1/jobs"),
            client.post("/v1/jobs", json=valid_spec()),
            client.get("/readyz"),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "5"
            assert response.json()["error"]["code"] == "store_unavailable"
        assert client.get("/healthz").status_code == 200
        assert "childtune_redis_up 0.0" in client.get("/metrics").text
    finally:
        stop(proc)


def test_the_mask_file_names_are_the_methods() -> None:
    """The API reads the files that childtuning writes, under names it cannot import."""
    from childtuning import delta, masks_io
    from service.core.artifacts import DELTA_JSON, MASK_AUDIT, MASK_SUMMARY

    assert (MASK_SUMMARY, MASK_AUDIT, DELTA_JSON) == (masks_io.SUMMARY, delta.AUDIT, delta.DELTA_JSON)
