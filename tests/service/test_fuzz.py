"""Property-based fuzzing of the REST API over its own OpenAPI schema (Schemathesis).

The real API process (uvicorn, a real redis-server, no worker: the session fixture ``api``)
gets requests generated from ``/openapi.json`` for every operation, valid and invalid ones, as
tenant alice. Every answer must:

- not be a 5xx (``/readyz`` excepted: its 503 says "no worker", as documented);
- conform to the schema: a documented status code, the documented content type and headers,
  a body valid against the documented schema (errors: ``{"error": {"code", "message", "field"}}``);
- reject what the schema calls invalid with a 4xx (a malformed query or path parameter);
- not ignore authentication.

It runs Schemathesis's engine (what ``st run`` runs): the examples, coverage (boundary values,
missing and malformed parameters, missing auth, unexpected methods) and fuzzing phases. The
engine rather than ``schema.parametrize()``: the schema is served by a process the session
fixture starts, so it needs the lazy ``schemathesis.pytest.from_fixture``, which fails with the
pinned pytest 9.2.0 (AttributeError: it reads ``Function._nodeid``, which pytest no longer has).

Deterministic: a fixed seed, derandomized generation, no example database, at most a fixed
number of examples per operation; the requests differ between runs only in the ids the server
makes up (job and file ids found in answers are reused in later requests).

``test_hostile_bodies_are_a_4xx_and_store_nothing`` adds inputs the generator does not make.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import StopReason, events, from_schema

from tests.e2e.stack import KEYS, Api

SEED = 20211107  # EMNLP 2021
# At most, per operation, in the fuzzing phase; the examples and coverage phases add a fixed set
# of their own. In all about 2500 requests over 26 operations: 30 s on 2 cores.
MAX_EXAMPLES = 100
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
)
ALL_CHECKS = (
    *CHECKS,
    "positive_data_acceptance",  # a schema-valid job spec may still be refused (no such file, model)
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
)
OPERATIONS = 26  # what /openapi.json documents; fewer means routes went missing from the schema


def fuzz_config(api_key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {api_key}"},
            "request-timeout": 30,
            "suppress-health-check": ["all"],  # too_slow & co. depend on the machine's load
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {name: {"enabled": name in CHECKS} for name in ALL_CHECKS},
            "operations": [
                {
                    # Not ready is a 503 by design (no worker in this fixture).
                    "include-path": "/readyz",
                    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
                },
            ],
        }
    )


@dataclass
class Outcome:
    """What the engine saw: failures (deduplicated per operation and kind), requests, statuses."""

    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    operations: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    stop_reason: StopReason | None = None

    def report(self) -> str:
        lines = [f"{len(self.failures)} failure(s), {len(self.errors)} error(s):"]
        lines += [f"\n[{op}] {check}: {text}" for (op, check, _), text in self.failures.items()]
        lines += [f"\nerror: {e}" for e in self.errors]
        return "\n".join(lines)


def _failure_text(recorder: Any, case_id: str, node: Any) -> str:
    failure = node.failure_info.failure
    message = failure.message.strip()[:800].replace("\n", "\n  ")
    text = f"{failure.title}\n  {message}\n  {node.failure_info.code_sample}"
    sent = recorder.interactions.get(case_id)
    if sent is not None and sent.response is not None:
        text += f"\n  -> {sent.response.status_code} {sent.response.content[:500]!r}"
    return text


def run_engine(schema: Any) -> Outcome:
    outcome = Outcome()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            outcome.operations.add(recorder.label)
            for sent in recorder.interactions.values():
                outcome.requests += 1
                status = sent.response.status_code if sent.response is not None else "no response"
                outcome.statuses[f"{recorder.label} {status}"] += 1
            for case_id, nodes in recorder.checks.items():
                for node in nodes:
                    if node.failure_info is None:
                        continue
                    key = (recorder.label, node.name, node.failure_info.failure.title)
                    if key not in outcome.failures:  # the first example of each kind is enough
                        outcome.failures[key] = _failure_text(recorder, case_id, node)
        elif isinstance(event, events.NonFatalError):
            outcome.errors.append(f"[{event.label}] {type(event.value).__name__}: {event.value}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            outcome.stop_reason = event.stop_reason
            outcome.errors += [f"after the run: {f}" for f in event.failures]
    return outcome


def test_every_operation_answers_within_its_schema(api: Api) -> None:
    start = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", config=fuzz_config(KEYS["alice"]))
    outcome = run_engine(schema)
    took = time.monotonic() - start
    print(
        f"schemathesis: {len(outcome.operations)} operations, {outcome.requests} requests in {took:.0f} s; "
        + ", ".join(f"{k}: {n}" for k, n in sorted(outcome.statuses.items()))
    )
    assert outcome.stop_reason == StopReason.COMPLETED, outcome.stop_reason
    if outcome.failures or outcome.errors:
        pytest.fail(outcome.report(), pytrace=False)
    assert len(outcome.operations) == OPERATIONS, sorted(outcome.operations)
    assert outcome.requests > OPERATIONS * 20, outcome.requests


SPEC = b'{"model": "minilm-l6", "dataset": {"preset": "glue/rte"}, "resources": {"device": "cpu"}'


def job(body: bytes) -> tuple[str, dict[str, Any]]:
    return "/v1/jobs", {"content": body, "headers": {"Content-Type": "application/json"}}


def jsonl(body: bytes) -> tuple[str, dict[str, Any]]:
    return "/v1/files", {"files": {"file": ("x.jsonl", body)}}


# What the generator does not produce: lone surrogates (JSON escapes), numbers past Python's
# 4300-digit limit, nesting past the decoder's recursion limit, bytes that are not UTF-8.
HOSTILE: dict[str, tuple[tuple[str, dict[str, Any]], int, str | None]] = {
    "surrogate value": (job(SPEC + b', "metadata": {"a": "\\ud800"}}'), 422, "metadata.a"),
    "surrogate key": (job(SPEC + b', "metadata": {"\\udfff": "x"}}'), 422, "metadata"),
    "surrogate model": (job(b'{"model": "\\ud800", "dataset": {}}'), 422, "model"),
    "5000 digits": (job(b"1" * 5000), 400, None),
    "deep nesting": (job(b"[" * 100_000 + b"]" * 100_000), 400, None),
    "not UTF-8": (job(b'{"model": "\xff"}'), 400, None),
    "file: surrogate column": (jsonl(b'{"\\ud800": 1}\n'), 422, "file"),
    "file: 5000 digits": (jsonl(b'{"a": ' + b"1" * 5000 + b"}\n"), 422, "file"),
    "file: deep nesting": (jsonl(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"), 422, "file"),
}


@pytest.mark.parametrize(("call", "status", "field"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_bodies_are_a_4xx_and_store_nothing(
    api: Api, call: tuple[str, dict[str, Any]], status: int, field: str | None
) -> None:
    from tests.service.test_api import job_keys, queued_messages

    client = api.client("alice")

    def stored() -> tuple[int, int, int]:
        return queued_messages(api), job_keys(api), len(client.get("/v1/files").json()["data"])

    before = stored()
    path, kwargs = call
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"] and error["field"] == field, error
    assert stored() == before
