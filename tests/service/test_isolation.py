"""What a tenant may name, against the real API and Redis: its own uploads by id, presets, models
in the operator's model roots, and its own succeeded jobs. Nothing else on the server, with one
answer whether or not the thing exists, and never a byte of a file it did not upload."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from service.core.store import Store
from tests.e2e.stack import KEYS, Api
from tests.service.test_api import job_keys, queued_messages, valid_spec


def models_root(api: Api) -> Path:
    root = api.artifacts.parent / "models"  # CHILDTUNE_MODEL_ROOTS of the fixture's API
    root.mkdir(parents=True, exist_ok=True)
    return root


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "secret": "s3cr3t-config"}))
    return path


def file_spec(train: str, eval_: str | None = None) -> dict[str, Any]:
    return valid_spec(
        dataset={
            "train_file": train,
            "eval_file": eval_ or train,
            "text_column": "text",
            "label_column": "label",
            "task_type": "classification",
        }
    )


def assert_refused(api: Api, response: Any, field: str) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    text = response.text
    for secret in (*KEYS.values(), "root:", "CHILDTUNE_", "s3cr3t", "PATH="):
        assert secret not in text, (secret, text)
    return str(error["message"])


def test_dataset_paths_are_refused_whatever_they_name(api: Api) -> None:
    """Defect 1: /proc/self/environ, /etc/passwd, ../ paths and another tenant's upload path."""
    alice, bob = api.client("alice"), api.client("bob")
    upload = bob.post("/v1/files", files={"file": ("b.csv", b"text,label\nbob secret row,1\nx,0\n")})
    assert upload.status_code == 201, upload.text
    bobs_path = str(api.artifacts / "files" / upload.json()["id"])
    assert Path(bobs_path).is_file()
    before = (queued_messages(api), job_keys(api))
    messages = []
    for path in ("/proc/self/environ", "/etc/passwd", "../../../../etc/passwd", bobs_path, "/no/such/file"):
        response = alice.post("/v1/jobs", json=file_spec(path))
        message = assert_refused(api, response, "dataset.train_file")
        assert "bob secret row" not in response.text
        messages.append(message.replace(repr(path), "<path>"))
    # One answer for a file that exists and one that does not: the reply reveals nothing.
    assert len(set(messages)) == 1, messages
    assert "upload" in messages[0] and "file id" in messages[0]
    # Bob's upload by id is Bob's alone.
    refused = alice.post("/v1/jobs", json=file_spec(upload.json()["id"]))
    assert_refused(api, refused, "dataset.train_file")
    assert (queued_messages(api), job_keys(api)) == before


def test_models_only_from_the_roots_presets_and_own_jobs(api: Api, tmp_path: Path) -> None:
    """Defect 2: a server folder with config.json outside the model roots, another tenant's job."""
    alice, bob = api.client("alice"), api.client("bob")
    root = models_root(api)
    model_folder(root / "tiny-a")
    outside = model_folder(tmp_path / "outside-model")
    os.symlink(outside, root / "link-out", target_is_directory=True)
    (root / "no-config").mkdir(exist_ok=True)
    # Bob's finished job, with its exported model.
    bob_job = bob.post("/v1/jobs", json=valid_spec()).json()["id"]
    store = Store(api.redis)
    assert store.transition(bob_job, "succeeded", allowed=("queued",)).ok
    bob_model = model_folder(api.artifacts / "jobs" / bob_job / "model")

    before = (queued_messages(api), job_keys(api))
    names = [
        str(outside),
        str(bob_model),
        str(root / ".." / "models" / ".." / tmp_path.name),
        "../" + outside.name,
        "link-out",
        str(root / "link-out"),
        "no-config",
        "/no/such/folder",
        "/etc",
        f"{bob_job}",
        f"{bob_job}/model",
        f"{bob_job}/best",
        "bert-base-uncased",  # a hub name: the hub is off here
    ]
    messages = {}
    for name in names:
        response = alice.post("/v1/jobs", json=valid_spec(model=name))
        messages[name] = assert_refused(api, response, "model").replace(repr(name), "<model>")
    path_messages = {m for n, m in messages.items() if not n.startswith("job-")}
    assert len(path_messages) == 1, path_messages  # existing or not: the same words
    assert "tiny-a" in next(iter(path_messages))  # and it says what may be given
    assert (queued_messages(api), job_keys(api)) == before

    # A root's model, by name or by path, resolves to its folder for the worker.
    for name in ("tiny-a", str(root / "tiny-a")):
        created = alice.post("/v1/jobs", json=valid_spec(model=name))
        assert created.status_code == 201, created.text
        resolved = json.loads(str(api.redis.hget(f"ct:job:{created.json()['id']}", "resolved_spec")))
        assert resolved["model"] == str((root / "tiny-a").resolve())
        assert created.json()["spec"]["model"] == name  # the caller's spec is kept as given

    # Bob may train on from his own job; Alice's job ids are not his.
    own = bob.post("/v1/jobs", json=valid_spec(model=bob_job))
    assert own.status_code == 201, own.text
    resolved = json.loads(str(api.redis.hget(f"ct:job:{own.json()['id']}", "resolved_spec")))
    assert resolved["model"] == str(bob_model.resolve())
    missing_best = bob.post("/v1/jobs", json=valid_spec(model=f"{bob_job}/best"))
    assert_refused(api, missing_best, "model")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hyperparameters": {"max_steps": 10**12, "batch_size": 8}}, "hyperparameters.max_steps"),
        ({"hyperparameters": {"epochs": 10**9}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"max_seq_length": 10**7}}, "hyperparameters.max_seq_length"),
        ({"hyperparameters": {"eval_every": 10**12}}, "hyperparameters.eval_every"),
        ({"resources": {"num_ranks": 10**6}}, "resources.num_ranks"),
        (
            {"childtuning": {"mode": "childtuning-d", "fisher_num_batches": 10**12}},
            "childtuning.fisher_num_batches",
        ),
        ({"model": "m" * 10_000}, "model"),
        ({"metadata": {"k": "v" * 5000}}, "metadata.k"),
    ],
)
def test_work_and_sizes_have_upper_bounds(api: Api, change: dict[str, Any], field: str) -> None:
    """Defect 7: a job cannot ask for unbounded work or memory."""
    response = api.client("alice").post("/v1/jobs", json=valid_spec(**change))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_num_labels_is_bounded(api: Api) -> None:
    spec = file_spec("file-0123456789abcdef")
    spec["dataset"]["num_labels"] = 10**30
    response = api.client("alice").post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "dataset.num_labels"
    assert "10000" in response.json()["error"]["message"]


def test_stream_cursors_beyond_64_bits_are_a_4xx(api: Api) -> None:
    """Defect 6: a 20-digit cursor part used to reach Redis and come back as a 500."""
    client = api.client("alice")
    job_id = client.post("/v1/jobs", json=valid_spec()).json()["id"]
    for which in ("metrics", "events"):
        for after in ("99999999999999999999-0", "0-99999999999999999999", "18446744073709551616-1"):
            response = client.get(f"/v1/jobs/{job_id}/{which}", params={"after": after})
            assert response.status_code == 422, (after, response.text)
            assert response.json()["error"]["field"] == "after"
        ok = client.get(
            f"/v1/jobs/{job_id}/{which}", params={"after": "18446744073709551615-18446744073709551615"}
        )
        assert ok.status_code == 200 and ok.json()["data"] == []
