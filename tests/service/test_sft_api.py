"""Causal-lm data through the REST API (real Redis, real uvicorn): every row of an instruction
file is checked at upload and a bad one is refused with its line; causal-lm jobs accept only
such files and refuse the column fields; nothing is enqueued for a refused job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core.datasets import DatasetFileError, sft_rows
from tests.e2e.stack import Api
from tests.service.test_api import job_keys, queued_messages, valid_spec


def jsonl(rows: list[Any]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


CHAT = [
    {
        "messages": [
            {"role": "system", "content": "You add numbers."},
            {"role": "user", "content": f"{a}+{a}="},
            {"role": "assistant", "content": str(2 * a)},
        ]
    }
    for a in range(5)
]
PROMPTS = [{"prompt": f"{a}+1=", "completion": str(a + 1)} for a in range(5)]


def upload(client: Any, name: str, body: bytes) -> Any:
    return client.post("/v1/files", files={"file": (name, body)})


def test_instruction_files_are_recognised_with_their_layout(api: Api) -> None:
    client = api.client("alice")
    chat = upload(client, "chat.jsonl", jsonl(CHAT))
    assert chat.status_code == 201, chat.text
    assert (chat.json()["layout"], chat.json()["num_rows"], chat.json()["columns"]) == (
        "chat",
        5,
        ["messages"],
    )
    plain = upload(client, "pc.jsonl", jsonl(PROMPTS))
    assert plain.status_code == 201, plain.text
    assert plain.json()["layout"] == "prompt-completion"
    table = upload(client, "t.csv", b"text,label\nhello,1\nbye,0\n")
    assert table.json()["layout"] == "table"
    assert client.get(f"/v1/files/{chat.json()['id']}").json()["layout"] == "chat"


BAD_ROWS = [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}, "messages[1].role"),
    (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]},
        "content must be text",
    ),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"messages": [{"role": "assistant", "content": "yo"}]}, "before any user turn"),
    ({"messages": "hi"}, "messages must be a non-empty list"),
    ({"messages": []}, "an empty list"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}, "no text"),
    (
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                CHAT[0]["messages"][2],
            ]
        },
        "system turn must come before",
    ),
    ({"prompt": "1+1="}, "neither prompt/completion nor messages"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
def test_a_malformed_chat_row_is_refused_at_upload_with_its_line(api: Api, row: Any, reason: str) -> None:
    client = api.client("alice")
    before = {f["id"] for f in client.get("/v1/files").json()["data"]}
    body = jsonl([*CHAT[:3], row, *CHAT[3:]])  # the bad row is on line 4
    response = upload(client, "chat.jsonl", body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_file", "file")
    assert "line 4" in error["message"] and reason in error["message"], error["message"]
    assert {f["id"] for f in client.get("/v1/files").json()["data"]} == before  # nothing kept


def test_a_prompt_completion_row_must_hold_text(api: Api) -> None:
    client = api.client("alice")
    response = upload(client, "pc.jsonl", jsonl([*PROMPTS, {"prompt": "x", "completion": 7}]))
    assert response.status_code == 422
    assert "line 6: completion must be text" in response.json()["error"]["message"]
    mixed = upload(client, "pc.jsonl", jsonl([*PROMPTS[:2], *CHAT[:1]]))
    assert mixed.status_code == 422
    assert "line 3" in mixed.json()["error"]["message"]


def test_causal_lm_jobs_take_instruction_files_only_and_no_columns(api: Api) -> None:
    client = api.client("alice")
    chat = upload(client, "chat.jsonl", jsonl(CHAT)).json()["id"]
    table = upload(client, "t.csv", b"text,label\nhello,1\nbye,0\n").json()["id"]
    dataset = {"train_file": chat, "eval_file": chat, "task_type": "causal-lm"}
    before = (queued_messages(api), job_keys(api))
    cases = [
        ({**dataset, "eval_file": table}, "dataset.eval_file", "holds table rows"),
        ({**dataset, "text_column": "messages"}, "dataset.text_column", "text_column is a column"),
        ({**dataset, "metric": "accuracy"}, "dataset.metric", "perplexity or exact_match"),
        ({"preset": "glue/rte", "overlong": "drop"}, "dataset.overlong", "causal-lm"),
    ]
    for data, field, words in cases:
        response = client.post("/v1/jobs", json=valid_spec(dataset=data, childtuning={"mode": "vanilla"}))
        assert response.status_code == 422, (data, response.text)
        error = response.json()["error"]
        assert error["field"] == field and words in error["message"], error
    rdrop = client.post(
        "/v1/jobs",
        json=valid_spec(dataset=dataset, hyperparameters={"max_steps": 2, "batch_size": 8, "rdrop_alpha": 1}),
    )
    assert rdrop.status_code == 422 and rdrop.json()["error"]["field"] == "hyperparameters.rdrop_alpha"
    assert (queued_messages(api), job_keys(api)) == before
    ok = client.post(
        "/v1/jobs", json=valid_spec(dataset={**dataset, "overlong": "drop", "metric": "exact_match"})
    )
    assert ok.status_code == 201, ok.text
    resolved = json.loads(str(api.redis.hget(f"ct:job:{ok.json()['id']}", "resolved_spec")))
    assert resolved["dataset"]["train_file"] == str(api.artifacts / "files" / chat)
    assert client.post(f"/v1/jobs/{ok.json()['id']}/cancel").json()["status"] == "cancelled"
    preset = client.post(
        "/v1/jobs", json=valid_spec(dataset={"preset": "instruct/sst-2", "max_train_examples": 16})
    )
    assert preset.status_code == 201, preset.text
    client.post(f"/v1/jobs/{preset.json()['id']}/cancel")


def test_the_reader_gives_rows_their_reference_and_question() -> None:
    layout, rows = sft_rows(jsonl(CHAT[:1] + CHAT[1:2]).decode())
    first = next(rows)
    assert layout == "chat" and first.line == 1
    assert (first.question, first.reference) == ("0+0=", "0")
    with pytest.raises(DatasetFileError, match="line 1: a causal-lm row is"):
        sft_rows('{"text": "x", "label": 1}\n')[1]
