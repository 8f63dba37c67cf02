"""What every part of the store shares: the Redis client, the key prefix, the Lua scripts
(``scripts/*.lua``, loaded once) and the encoding of a record's fields (one JSON value each)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

from service.core.contract.vocabulary import FINAL_STATUSES
from service.core.records import (
    DISPATCHING,
    U64_MAX,
    ExperimentRecord,
    FileRecord,
    JobRecord,
    Page,
    Transition,
)

P = "ct:"
SCRIPTS = Path(__file__).with_name("scripts")


def _lua_set(names: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"[{json.dumps(n)}] = true" for n in names) + "}"


def script_text(name: str) -> str:
    """``scripts/<name>.lua`` after the constants every script may use: ``PREFIX`` (the key
    prefix), ``FINAL`` (the final statuses, a set) and ``DISPATCHING`` (a phase), spelled once in
    Python and handed to Lua here."""
    preamble = (
        f"local PREFIX = {json.dumps(P)}\n"
        f"local FINAL = {_lua_set(FINAL_STATUSES)}\n"
        f"local DISPATCHING = {json.dumps(DISPATCHING)}\n"
    )
    return preamble + (SCRIPTS / f"{name}.lua").read_text()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)


Owned = TypeVar("Owned", JobRecord, ExperimentRecord, FileRecord)


def record_of(model: type[Owned], raw: dict[str, str], tenant: str | None) -> Owned | None:
    """A record's hash (one JSON value per field) as ``model``; None when empty or another
    tenant's (when ``tenant`` is given: another tenant's record looks like a missing one)."""
    if not raw:
        return None
    record = model.model_validate({k: json.loads(v) for k, v in raw.items()})
    if tenant is not None and record.tenant != tenant:
        return None
    return record


def job_of(raw: dict[str, str], tenant: str | None) -> JobRecord | None:
    """A job hash as a record (:func:`record_of`)."""
    return record_of(JobRecord, raw, tenant)


def stream_low(which: str, after: str) -> str | None:
    """XRANGE's lower bound for records strictly after ``after``; None when none can follow."""
    assert which in ("metrics", "events")
    if after == f"{U64_MAX}-{U64_MAX}":  # the largest id: nothing can follow it
        return None
    return "-" if after in ("", "0") else f"({after}"


def page_of(rows: list[tuple[str, dict[str, str]]], after: str) -> Page:
    items = []
    for entry_id, fields in rows:
        record = json.loads(fields["r"])
        record["cursor"] = entry_id
        items.append(record)
    return Page(items=items, next_cursor=rows[-1][0] if rows else (after or "0"))


class StoreBase:
    """The client and the registered scripts; each part of :class:`~service.core.store.Store`
    adds the methods for one kind of data."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._transition = client.register_script(script_text("transition"))
        self._append_once_script = client.register_script(script_text("append_once"))
        self._claim_slots = client.register_script(script_text("claim_slots"))
        self._close_experiment = client.register_script(script_text("close_experiment"))
        self._claim_webhook = client.register_script(script_text("claim_webhook"))
        self._gang_assign = client.register_script(script_text("gang_assign"))
        self._gang_worker = client.register_script(script_text("gang_worker"))
        self._gang_join = client.register_script(script_text("gang_join"))
        self._gang_release = client.register_script(script_text("gang_release"))

    def ping(self) -> bool:
        return bool(self.r.ping())

    def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """The job, or None when it does not exist (or belongs to another tenant than ``tenant``)."""
        return job_of(cast(dict[str, str], self.r.hgetall(P + f"job:{job_id}")), tenant)

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set fields of an existing job (not its status: use ``transition``)."""
        assert "status" not in fields
        if fields:
            self.r.hset(P + f"job:{job_id}", mapping={k: dumps(v) for k, v in fields.items()})

    def transition(
        self,
        job_id: str,
        new_status: str | None,
        *,
        allowed: Iterable[str] = (),
        expect_run: str | None = None,
        incr_attempts: bool = False,
        **fields: Any,
    ) -> Transition:
        """Atomically move a job to ``new_status`` (and set ``fields``) if its status is in
        ``allowed`` (any when empty) and its run id is ``expect_run`` (any when None)."""
        allowed_arg = ("," + ",".join(allowed) + ",") if allowed else ""
        args: list[str] = [
            allowed_arg,
            dumps(expect_run) if expect_run is not None else "",
            new_status or "",
            "1" if incr_attempts else "0",
        ]
        for key, value in fields.items():
            args += [key, dumps(value)]
        outcome, previous = cast(list[str], self._transition(keys=[P + f"job:{job_id}"], args=args))
        return Transition(ok=outcome == "ok", previous=previous or None)
