"""The job and file store on Redis: the one place that knows the keys.

Keys (prefix ``ct:``):

- ``ct:job:<id>`` hash, one JSON value per field of :class:`JobRecord`; ``ct:status:<status>``
  sets (jobs by status); ``ct:tenant:<t>:jobs`` sorted set (score: a global sequence number, so
  cursor paging is stable under inserts).
- ``ct:job:<id>:metrics`` / ``:events`` streams, one field ``r`` (the record as JSON); their
  entry ids are the ``after=`` cursors. ``ct:job:<id>:steps`` hash: the last step stored per
  metric kind (a resumed run's re-emitted steps are dropped).
- ``ct:job:<id>:cancel``: set when a cancel of a running job is asked.
- ``ct:job:<id>:lease``: the run id of the task supervising the job, renewed every poll and
  expiring after ``heartbeat_ttl_s`` (a lost lease: that task died; the job is taken over).
- ``ct:file:<id>`` hash and ``ct:tenant:<t>:files`` sorted set: uploaded datasets.
- ``ct:exp:<id>`` hash (an :class:`ExperimentRecord`), ``ct:tenant:<t>:exps`` sorted set,
  ``ct:exp:<id>:pending`` list (its jobs not yet sent to a queue, in grid order),
  ``ct:exp:<id>:active`` sorted set (its jobs sent and not finished -> when sent),
  ``ct:exps:open`` set (experiments with a job not finished).
- ``ct:workers`` sorted set (worker instance -> last heartbeat), ``ct:worker:<instance>`` hash
  (hostname, queues, pid), ``ct:worker-host:<hostname>`` (expiring: ``childtune worker --check``),
  ``ct:worker-stop:<instance>`` (the worker is shutting down: its task requeues the job).
- Webhooks (``service/core/webhooks.py``): ``ct:webhooks:due`` sorted set (job or experiment id
  -> when its notification's next attempt is due; added by the status change to final, or the
  experiment's close, in the same script), ``ct:webhook:<job or exp id>`` (a
  :class:`WebhookDelivery` as JSON, expiring once settled), ``ct:tenant:<t>:webhooks`` sorted
  set (its latest deliveries) and ``ct:tenant:<t>:webhook-secret`` hash (secret, created_at).

Status changes go through one Lua script (:meth:`Store.transition`), so a cancel racing with a
claim, or a reaper racing with a finishing task, leaves one consistent answer.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis
from pydantic import BaseModel, Field
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.core.contract import STATUSES
from service.core.jobdir import json_safe

__all__ = [
    "FINAL_STATUSES",
    "ExperimentRecord",
    "FileRecord",
    "JobRecord",
    "LoopReads",
    "Page",
    "Store",
    "Transition",
    "WebhookDelivery",
    "new_experiment_id",
    "new_file_id",
    "new_job_id",
    "valid_cursor",
    "valid_experiment_id",
    "valid_file_id",
    "valid_job_id",
]

P = "ct:"
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
_JOB_ID = re.compile(r"^job-[0-9a-f]{16}$")
_FILE_ID = re.compile(r"^file-[0-9a-f]{16}$")
_EXP_ID = re.compile(r"^exp-[0-9a-f]{16}$")
_STREAM_ID = re.compile(r"^(0|\d{1,20}-\d{1,20})$")


def new_job_id() -> str:
    return f"job-{secrets.token_hex(8)}"


def new_file_id() -> str:
    return f"file-{secrets.token_hex(8)}"


def valid_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text))


def valid_file_id(text: str) -> bool:
    return bool(_FILE_ID.match(text))


def new_experiment_id() -> str:
    return f"exp-{secrets.token_hex(8)}"


def valid_experiment_id(text: str) -> bool:
    return bool(_EXP_ID.match(text))


_U64_MAX = 2**64 - 1


def valid_cursor(text: str) -> bool:
    """A stream cursor: ``0`` (from the start) or an entry id ``<ms>-<seq>``, each part a
    64-bit unsigned number as Redis requires (a larger part would make Redis raise)."""
    if not _STREAM_ID.match(text):
        return False
    return all(int(part) <= _U64_MAX for part in text.split("-"))


class JobRecord(BaseModel):
    """A job as stored: what the API shows and what the task and the sink update."""

    id: str
    tenant: str
    status: str = "queued"
    phase: str | None = None
    step: int = 0
    total_steps: int | None = None
    latest_train: dict[str, Any] | None = None
    latest_eval: dict[str, Any] | None = None
    best_eval: dict[str, Any] | None = None
    final_eval: dict[str, Any] | None = None  # the last evaluation: the final model's dev score
    error: str | None = None
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    spec: dict[str, Any]
    resolved_spec: dict[str, Any]
    queue: str
    worker: str | None = None
    worker_instance: str | None = None
    run_id: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    seq: int = 0
    experiment_id: str | None = None  # the experiment whose grid made this job


WAITING = "waiting"  # the phase of an experiment's queued job held back by its max_parallel
DISPATCHING = "dispatching"  # given a slot; its message is being sent


class ExperimentRecord(BaseModel):
    """An experiment as stored: its spec and its jobs (id and axis values, in grid order)."""

    id: str
    tenant: str
    name: str | None = None
    spec: dict[str, Any]
    jobs: list[dict[str, Any]]  # {"id": job id, "values": {axis path: value}}
    created_at: float = Field(default_factory=time.time)
    cancel_requested: bool = False
    seq: int = 0


class FileRecord(BaseModel):
    """An uploaded dataset file (its bytes live at ``<artifacts>/files/<id>``)."""

    id: str
    tenant: str
    filename: str
    format: str
    size_bytes: int
    num_rows: int
    columns: list[str]
    created_at: float = Field(default_factory=time.time)
    layout: str = "table"  # table | prompt-completion | chat (service.core.datasets.LAYOUTS)


class WebhookDelivery(BaseModel):
    """The notification of one finished job or experiment (``subject``) and its attempts."""

    id: str  # the delivery id, sent in the body and the Childtune-Delivery header
    subject: str  # the job or experiment id
    tenant: str
    url: str
    type: str  # job.succeeded, experiment.cancelled, ...
    body: str  # the exact JSON sent on every attempt
    created_at: float = Field(default_factory=time.time)
    state: str = "pending"  # pending | delivered | failed (given up)
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    next_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Transition:
    """The answer of :meth:`Store.transition`: ``ok`` when applied; ``previous`` = status before."""

    ok: bool
    previous: str | None


# KEYS[1] job hash. ARGV: allowed statuses as ",a,b," ('' = any), expected run id as JSON ('' = any),
# new status ('' = unchanged), increment attempts ('1'/'0'), then field/value pairs (values JSON).
_TRANSITION = """
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw then return {'missing', ''} end
local cur = cjson.decode(raw)
if ARGV[1] ~= '' and not string.find(ARGV[1], ',' .. cur .. ',', 1, true) then return {'rejected', cur} end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'run_id') ~= ARGV[2] then return {'rejected', cur} end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local new = ARGV[3]
if new ~= '' and new ~= cur then
  local id = cjson.decode(redis.call('HGET', KEYS[1], 'id'))
  redis.call('HSET', KEYS[1], 'status', cjson.encode(new))
  redis.call('SREM', 'ct:status:' .. cur, id)
  redis.call('SADD', 'ct:status:' .. new, id)
  if (new == 'succeeded' or new == 'failed' or new == 'cancelled')
      and cur ~= 'succeeded' and cur ~= 'failed' and cur ~= 'cancelled' then
    local spec = cjson.decode(redis.call('HGET', KEYS[1], 'spec') or 'null')
    if type(spec) == 'table' and type(spec['webhook_url']) == 'string' then
      redis.call('ZADD', 'ct:webhooks:due', 'NX', 0, id)  -- its notification, due now
    end
  end
end
return {'ok', cur}
"""

# KEYS[1] open experiments set, KEYS[2] pending list, KEYS[3] active set, KEYS[4] experiment hash.
# ARGV[1] experiment id. Closes it; the first close of one with a webhook_url makes its
# notification due (later calls find it closed already and add nothing).
_CLOSE_EXPERIMENT = """
local was_open = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
if was_open == 1 then
  local spec = cjson.decode(redis.call('HGET', KEYS[4], 'spec') or 'null')
  if type(spec) == 'table' and type(spec['webhook_url']) == 'string' then
    redis.call('ZADD', 'ct:webhooks:due', 'NX', 0, ARGV[1])
  end
end
return was_open
"""

# KEYS[1] due sorted set. ARGV: member, now, lease end. Takes a due notification for one attempt:
# its time moves to the lease end (another worker retries it then if this one dies mid-attempt).
_CLAIM_WEBHOOK = """
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at or tonumber(at) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# KEYS[1] steps hash, KEYS[2] stream, KEYS[3] job hash. ARGV: kind, step, record JSON, field/value pairs.
# Events use the same script with kind "event" and their sequence number as the step. Steps start
# at 0 (an eval_at_start evaluation), so a kind with nothing stored yet is at -1.
_APPEND_METRIC = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'r', ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


# KEYS[1] pending list, KEYS[2] active sorted set. ARGV: max_parallel, now. Forgets the active jobs
# that have finished, then moves pending jobs still queued to active until max_parallel are;
# each is marked "dispatching". Returns their ids: the caller sends their messages.
_CLAIM_SLOTS = """
local function status(id)
  local raw = redis.call('HGET', 'ct:job:' .. id, 'status')
  if not raw then return nil end
  return cjson.decode(raw)
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local st = status(id)
  if st == nil or st == 'succeeded' or st == 'failed' or st == 'cancelled' then
    redis.call('ZREM', KEYS[2], id)
  end
end
local taken = {}
while redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[1]) do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if status(id) == 'queued' then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', 'ct:job:' .. id, 'phase', cjson.encode('dispatching'))
    table.insert(taken, id)
  end
end
return taken
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)


def _job_of(raw: dict[str, str], tenant: str | None) -> JobRecord | None:
    """A job hash as a record; None when empty or another tenant's (when ``tenant`` is given)."""
    if not raw:
        return None
    record = JobRecord.model_validate({k: json.loads(v) for k, v in raw.items()})
    if tenant is not None and record.tenant != tenant:
        return None
    return record


def _stream_low(which: str, after: str) -> str | None:
    """XRANGE's lower bound for records strictly after ``after``; None when none can follow."""
    assert which in ("metrics", "events")
    if after == f"{_U64_MAX}-{_U64_MAX}":  # the largest id: nothing can follow it
        return None
    return "-" if after in ("", "0") else f"({after}"


def _page_of(rows: list[tuple[str, dict[str, str]]], after: str) -> Page:
    items = []
    for entry_id, fields in rows:
        record = json.loads(fields["r"])
        record["cursor"] = entry_id
        items.append(record)
    return Page(items=items, next_cursor=rows[-1][0] if rows else (after or "0"))


class Store:
    """Jobs, files, streams, cancel flags and worker heartbeats in one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._transition = client.register_script(_TRANSITION)
        self._append_metric = client.register_script(_APPEND_METRIC)
        self._claim_slots = client.register_script(_CLAIM_SLOTS)
        self._close_experiment = client.register_script(_CLOSE_EXPERIMENT)
        self._claim_webhook = client.register_script(_CLAIM_WEBHOOK)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 5.0) -> Store:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        return cls(client)

    def ping(self) -> bool:
        return bool(self.r.ping())

    # ----------------------------------------------------------------------------------- jobs

    def create_job(self, record: JobRecord) -> JobRecord:
        """Write a new job (status ``queued``) and index it for its tenant."""
        seq = int(cast(int, self.r.incr(P + "seq")))
        record = record.model_copy(update={"seq": seq, "status": "queued"})
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(P + f"job:{record.id}", mapping={k: _dumps(v) for k, v in record.model_dump().items()})
        pipe.zadd(P + f"tenant:{record.tenant}:jobs", {record.id: seq})
        pipe.sadd(P + "status:queued", record.id)
        pipe.execute()
        return record

    def delete_job(self, job_id: str) -> None:
        """Remove a job entirely (used to undo a job whose enqueue failed)."""
        record = self.get_job(job_id)
        if record is None:
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(P + f"job:{job_id}", P + f"job:{job_id}:metrics", P + f"job:{job_id}:events")
        pipe.delete(P + f"job:{job_id}:steps", P + f"job:{job_id}:cancel", P + f"job:{job_id}:lease")
        pipe.zrem(P + f"tenant:{record.tenant}:jobs", job_id)
        for status in STATUSES:
            pipe.srem(P + f"status:{status}", job_id)
        pipe.execute()

    def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """The job, or None when it does not exist (or belongs to another tenant than ``tenant``)."""
        return _job_of(cast(dict[str, str], self.r.hgetall(P + f"job:{job_id}")), tenant)

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set fields of an existing job (not its status: use :meth:`transition`)."""
        assert "status" not in fields
        if fields:
            self.r.hset(P + f"job:{job_id}", mapping={k: _dumps(v) for k, v in fields.items()})

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
            _dumps(expect_run) if expect_run is not None else "",
            new_status or "",
            "1" if incr_attempts else "0",
        ]
        for key, value in fields.items():
            args += [key, _dumps(value)]
        outcome, previous = cast(list[str], self._transition(keys=[P + f"job:{job_id}"], args=args))
        return Transition(ok=outcome == "ok", previous=previous or None)

    def list_jobs(
        self, tenant: str, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> Page:
        """The tenant's jobs, newest first; ``cursor`` = the ``next_cursor`` of the previous page."""
        key = P + f"tenant:{tenant}:jobs"
        upper = f"({int(cursor)}" if cursor else "+inf"
        found: list[JobRecord] = []
        batch = max(limit + 1, 50)
        while len(found) <= limit:
            rows = cast(
                list[tuple[str, float]],
                self.r.zrevrangebyscore(key, upper, "-inf", start=0, num=batch, withscores=True),
            )
            if not rows:
                break
            for job_id, _score in rows:
                record = self.get_job(job_id)
                if record is not None and (status is None or record.status == status):
                    found.append(record)
                    if len(found) > limit:
                        break
            upper = f"({int(rows[-1][1])}"
            if len(rows) < batch:
                break
        more = len(found) > limit
        items = found[:limit]
        return Page(items=items, next_cursor=str(items[-1].seq) if more and items else None)

    def jobs_with_status(self, status: str) -> list[str]:
        return sorted(cast(set[str], self.r.smembers(P + f"status:{status}")))

    def count_by_status(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for status in STATUSES:
            pipe.scard(P + f"status:{status}")
        return dict(zip(STATUSES, (int(n) for n in pipe.execute()), strict=True))

    def get_jobs(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        """Several jobs in one round trip (None for a missing one), in the order asked."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(P + f"job:{job_id}")
        return [_job_of(cast(dict[str, str], raw), None) for raw in pipe.execute()]

    # -------------------------------------------------------------------------- experiments

    def create_experiment(self, experiment: ExperimentRecord, jobs: list[JobRecord]) -> ExperimentRecord:
        """Write an experiment and all its jobs at once (``queued``, phase ``waiting``), its jobs
        pending in grid order: none is sent to a queue here (:func:`service.core.dispatch.advance`)."""
        last = int(cast(int, self.r.incrby(P + "seq", len(jobs) + 1)))
        first = last - len(jobs)
        experiment = experiment.model_copy(update={"seq": last})
        pipe = self.r.pipeline(transaction=True)
        for i, job in enumerate(jobs):
            fields = {"seq": first + i, "status": "queued", "phase": WAITING, "experiment_id": experiment.id}
            job = job.model_copy(update=fields)
            pipe.hset(P + f"job:{job.id}", mapping={k: _dumps(v) for k, v in job.model_dump().items()})
            pipe.zadd(P + f"tenant:{job.tenant}:jobs", {job.id: job.seq})
            pipe.sadd(P + "status:queued", job.id)
        pipe.hset(
            P + f"exp:{experiment.id}", mapping={k: _dumps(v) for k, v in experiment.model_dump().items()}
        )
        pipe.zadd(P + f"tenant:{experiment.tenant}:exps", {experiment.id: experiment.seq})
        pipe.rpush(P + f"exp:{experiment.id}:pending", *[job.id for job in jobs])
        pipe.sadd(P + "exps:open", experiment.id)
        pipe.execute()
        return experiment

    def get_experiment(self, exp_id: str, tenant: str | None = None) -> ExperimentRecord | None:
        """The experiment, or None when missing (or another tenant's than ``tenant``)."""
        raw = cast(dict[str, str], self.r.hgetall(P + f"exp:{exp_id}"))
        if not raw:
            return None
        record = ExperimentRecord.model_validate({k: json.loads(v) for k, v in raw.items()})
        if tenant is not None and record.tenant != tenant:
            return None
        return record

    def list_experiments(self, tenant: str, *, limit: int = 20, cursor: str | None = None) -> Page:
        """The tenant's experiments, newest first; ``cursor`` = the previous page's ``next_cursor``."""
        upper = f"({int(cursor)}" if cursor else "+inf"
        rows = cast(
            list[tuple[str, float]],
            self.r.zrevrangebyscore(
                P + f"tenant:{tenant}:exps", upper, "-inf", start=0, num=limit + 1, withscores=True
            ),
        )
        items = [e for e in (self.get_experiment(exp_id) for exp_id, _ in rows[:limit]) if e is not None]
        more = len(rows) > limit
        return Page(items=items, next_cursor=str(int(rows[limit - 1][1])) if more else None)

    def claim_slots(self, exp_id: str, max_parallel: int) -> list[str]:
        """Pending jobs given a slot (at most ``max_parallel`` of the experiment's jobs are sent
        and unfinished at once), marked ``dispatching``: the caller sends their messages."""
        keys = [P + f"exp:{exp_id}:pending", P + f"exp:{exp_id}:active"]
        return cast(list[str], self._claim_slots(keys=keys, args=[max_parallel, time.time()]))

    def dispatched(self, job_id: str) -> None:
        """The job's message is sent: it is an ordinary queued job now (phase cleared)."""
        self.transition(job_id, None, allowed=("queued",), phase=None)

    def active_jobs(self, exp_id: str) -> dict[str, float]:
        """The experiment's jobs holding a slot -> when they got it."""
        rows = self.r.zrange(P + f"exp:{exp_id}:active", 0, -1, withscores=True)
        return {job_id: float(at) for job_id, at in cast(list[tuple[str, float]], rows)}

    def drop_pending(self, exp_id: str) -> None:
        self.r.delete(P + f"exp:{exp_id}:pending")

    def request_experiment_cancel(self, exp_id: str) -> None:
        self.r.hset(P + f"exp:{exp_id}", "cancel_requested", _dumps(True))

    def open_experiments(self) -> list[str]:
        return sorted(cast(set[str], self.r.smembers(P + "exps:open")))

    def close_experiment(self, exp_id: str) -> None:
        """Every job of the experiment has finished: no more dispatching for it (and, the first
        time, its webhook notification is due, in the same atomic step)."""
        keys = [P + "exps:open", P + f"exp:{exp_id}:pending", P + f"exp:{exp_id}:active", P + f"exp:{exp_id}"]
        self._close_experiment(keys=keys, args=[exp_id])

    # ------------------------------------------------------------------------------ cancel

    def request_cancel(self, job_id: str) -> Transition:
        """Cancel a job: a queued one at once; a running one is flagged for its worker."""
        queued = self.transition(
            job_id, "cancelled", allowed=("queued",), cancel_requested=True, finished_at=time.time()
        )
        if queued.ok:
            return queued
        running = self.transition(job_id, None, allowed=("running",), cancel_requested=True)
        if running.ok:
            self.r.set(P + f"job:{job_id}:cancel", "1")
        return running

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(P + f"job:{job_id}:cancel"))

    def clear_cancel(self, job_id: str) -> None:
        self.r.delete(P + f"job:{job_id}:cancel")

    # ----------------------------------------------------------------------------- streams

    def append_metric(self, job_id: str, record: Mapping[str, Any], **job_fields: Any) -> bool:
        """Append a metric record unless its (kind, step) is not newer than the last one stored.

        ``job_fields`` update the job record in the same atomic step. Returns whether it was added.
        """
        kind = str(record.get("kind", "train"))
        return self._append_once(job_id, "metrics", kind, int(record.get("step", 0)), record, job_fields)

    def append_event(self, job_id: str, record: Mapping[str, Any], **job_fields: Any) -> bool:
        """Append an event; one carrying a ``seq`` (its number in ``events.jsonl``) is appended
        only when newer than the last stored, so replaying a job's file adds only what is missing.
        ``job_fields`` update the job record in the same atomic step. Returns whether it was added."""
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.r.xadd(P + f"job:{job_id}:events", {"r": _dumps(json_safe(dict(record)))})
            if job_fields:
                self.update_job(job_id, **job_fields)
            return True
        return self._append_once(job_id, "events", "event", seq, record, job_fields)

    def _append_once(
        self,
        job_id: str,
        stream: str,
        kind: str,
        number: int,
        record: Mapping[str, Any],
        job_fields: Mapping[str, Any],
    ) -> bool:
        """Append ``record`` to the job's ``stream`` unless ``number`` is not newer than the last
        stored for ``kind``; set ``job_fields`` on the job in the same atomic step."""
        args: list[str] = [kind, str(number), _dumps(json_safe(dict(record)))]
        for key, value in job_fields.items():
            args += [key, _dumps(json_safe(value))]
        keys = [P + f"job:{job_id}:steps", P + f"job:{job_id}:{stream}", P + f"job:{job_id}"]
        return bool(self._append_metric(keys=keys, args=args))

    # ------------------------------------------------------------------------------ leases

    def renew_lease(self, job_id: str, run_id: str, ttl_s: float) -> None:
        """Hold (or renew) the job's run lease for ``ttl_s`` seconds."""
        self.r.set(P + f"job:{job_id}:lease", run_id, px=max(1, int(ttl_s * 1000)))

    def lease_holder(self, job_id: str) -> str | None:
        """The run id holding the job's lease, or None when no live task supervises it."""
        return cast(str | None, self.r.get(P + f"job:{job_id}:lease"))

    def release_lease(self, job_id: str, run_id: str) -> None:
        if self.lease_holder(job_id) == run_id:
            self.r.delete(P + f"job:{job_id}:lease")

    def finish_run(
        self, job_id: str, run_id: str | None, status: str, error: str | None = None
    ) -> Transition:
        """The one way a running job of run ``run_id`` ends (``succeeded``, ``failed`` or
        ``cancelled``): its finish time, its error, and for a success the step at its total."""
        fields: dict[str, Any] = {"finished_at": time.time(), "error": error}
        if status == "succeeded":
            record = self.get_job(job_id)
            if record is not None and record.total_steps:
                fields["step"] = record.total_steps
        return self.transition(job_id, status, allowed=("running",), expect_run=run_id, **fields)

    def requeue(self, job_id: str, run_id: str | None) -> Transition:
        """The one way a running job goes back to ``queued`` (its run ``run_id`` is over)."""
        return self.transition(
            job_id,
            "queued",
            allowed=("running",),
            expect_run=run_id,
            worker=None,
            worker_instance=None,
            run_id=None,
        )

    def read_stream(self, job_id: str, which: str, *, after: str = "0", limit: int = 1000) -> Page:
        """Records of the ``metrics`` or ``events`` stream strictly after ``after``.

        ``next_cursor`` is the id of the last record returned (``after`` itself when none), so
        a client passing it back sees every record exactly once.
        """
        low = _stream_low(which, after)
        if low is None:
            return Page(items=[], next_cursor=after)
        rows = self.r.xrange(P + f"job:{job_id}:{which}", low, "+", count=limit)
        return _page_of(cast(list[tuple[str, dict[str, str]]], rows), after)

    # ------------------------------------------------------------------------------- files

    def create_file(self, record: FileRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(P + f"file:{record.id}", mapping={k: _dumps(v) for k, v in record.model_dump().items()})
        pipe.zadd(P + f"tenant:{record.tenant}:files", {record.id: record.created_at})
        pipe.execute()

    def get_file(self, file_id: str, tenant: str | None = None) -> FileRecord | None:
        raw = cast(dict[str, str], self.r.hgetall(P + f"file:{file_id}"))
        if not raw:
            return None
        record = FileRecord.model_validate({k: json.loads(v) for k, v in raw.items()})
        if tenant is not None and record.tenant != tenant:
            return None
        return record

    def list_files(self, tenant: str) -> list[FileRecord]:
        ids = cast(list[str], self.r.zrevrange(P + f"tenant:{tenant}:files", 0, -1))
        return [f for f in (self.get_file(i) for i in ids) if f is not None]

    def delete_file(self, record: FileRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(P + f"file:{record.id}")
        pipe.zrem(P + f"tenant:{record.tenant}:files", record.id)
        pipe.execute()

    # ---------------------------------------------------------------------------- webhooks

    def webhook_secret(self, tenant: str, *, rotate: bool = False) -> tuple[str, float]:
        """The tenant's signing secret and when it was made: created on first use; ``rotate``
        replaces it (the old one stops signing at once)."""
        key = P + f"tenant:{tenant}:webhook-secret"
        secret, created = "whsec_" + secrets.token_hex(32), str(time.time())
        if rotate:
            self.r.hset(key, mapping={"secret": secret, "created_at": created})
        else:
            pipe = self.r.pipeline(transaction=True)
            pipe.hsetnx(key, "secret", secret)
            pipe.hsetnx(key, "created_at", created)
            pipe.execute()
        raw = cast(dict[str, str], self.r.hgetall(key))
        return raw["secret"], float(raw["created_at"])

    def due_webhooks(self, now: float, limit: int) -> list[str]:
        """Subjects (job or experiment ids) whose notification is due at ``now``, oldest first."""
        return cast(list[str], self.r.zrangebyscore(P + "webhooks:due", "-inf", now, start=0, num=limit))

    def next_webhook_at(self) -> float | None:
        """When the earliest pending notification is due (None when none is pending)."""
        rows = cast(list[tuple[str, float]], self.r.zrange(P + "webhooks:due", 0, 0, withscores=True))
        return float(rows[0][1]) if rows else None

    def claim_webhook(self, subject: str, now: float, lease_s: float) -> bool:
        """Take a due notification for one attempt (one worker at a time): until ``now +
        lease_s`` no other worker sees it due, after which it is due again if still pending."""
        args = [subject, repr(now), repr(now + lease_s)]
        return bool(self._claim_webhook(keys=[P + "webhooks:due"], args=args))

    def get_delivery(self, subject: str, tenant: str | None = None) -> WebhookDelivery | None:
        raw = cast(str | None, self.r.get(P + f"webhook:{subject}"))
        if raw is None:
            return None
        delivery = WebhookDelivery.model_validate_json(raw)
        return None if tenant is not None and delivery.tenant != tenant else delivery

    def save_delivery(self, delivery: WebhookDelivery, *, keep_s: float, index_max: int = 1000) -> None:
        """Store the delivery after an attempt: still pending, it is due again at its
        ``next_attempt_at``; settled (delivered or given up), it leaves the due set and is kept
        ``keep_s`` seconds. The tenant's index keeps its latest ``index_max`` deliveries."""
        index = P + f"tenant:{delivery.tenant}:webhooks"
        pipe = self.r.pipeline(transaction=True)
        settled = delivery.state != "pending" or delivery.next_attempt_at is None
        keep = int(keep_s) if settled else None
        pipe.set(P + f"webhook:{delivery.subject}", delivery.model_dump_json(), ex=keep)
        if settled:
            pipe.zrem(P + "webhooks:due", delivery.subject)
        else:
            pipe.zadd(P + "webhooks:due", {delivery.subject: cast(float, delivery.next_attempt_at)})
        pipe.zadd(index, {delivery.subject: delivery.created_at})
        pipe.zremrangebyrank(index, 0, -index_max - 1)
        pipe.execute()

    def drop_webhook(self, subject: str) -> None:
        """Forget a due notification whose subject is gone."""
        self.r.zrem(P + "webhooks:due", subject)

    def list_deliveries(self, tenant: str, *, limit: int = 20) -> list[WebhookDelivery]:
        """The tenant's latest deliveries, newest first (settled ones expire after a while)."""
        subjects = cast(list[str], self.r.zrevrange(P + f"tenant:{tenant}:webhooks", 0, limit - 1))
        pipe = self.r.pipeline(transaction=False)
        for subject in subjects:
            pipe.get(P + f"webhook:{subject}")
        found = [WebhookDelivery.model_validate_json(raw) for raw in pipe.execute() if raw is not None]
        return [d for d in found if d.tenant == tenant]

    # ----------------------------------------------------------------------------- workers

    def heartbeat(self, instance: str, hostname: str, queues: list[str], ttl_s: float) -> None:
        now = time.time()
        ttl_ms = max(1, int(ttl_s * 1000))
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(P + "workers", {instance: now})
        pipe.hset(
            P + f"worker:{instance}",
            mapping={"hostname": hostname, "queues": ",".join(queues), "beat": str(now)},
        )
        pipe.pexpire(P + f"worker:{instance}", ttl_ms * 10)
        pipe.set(P + f"worker-host:{hostname}", instance, px=ttl_ms)
        pipe.execute()

    def drop_worker(self, instance: str, hostname: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(P + "workers", instance)
        pipe.delete(P + f"worker:{instance}", P + f"worker-stop:{instance}")
        pipe.delete(P + f"worker-host:{hostname}")
        pipe.execute()

    def workers_alive(self, ttl_s: float) -> list[str]:
        """Worker instances whose last heartbeat is younger than ``ttl_s``."""
        now = time.time()
        self.r.zremrangebyscore(P + "workers", "-inf", now - 100 * ttl_s)  # long gone: forget them
        return cast(list[str], self.r.zrangebyscore(P + "workers", now - ttl_s, "+inf"))

    def worker_alive(self, instance: str, ttl_s: float) -> bool:
        beat = self.r.zscore(P + "workers", instance)
        return beat is not None and time.time() - float(cast(float, beat)) < ttl_s

    def host_alive(self, hostname: str) -> bool:
        return bool(self.r.exists(P + f"worker-host:{hostname}"))

    def request_worker_stop(self, instance: str) -> None:
        self.r.set(P + f"worker-stop:{instance}", "1", ex=3600)

    def worker_stopping(self, instance: str) -> bool:
        return bool(self.r.exists(P + f"worker-stop:{instance}"))

    def try_lock(self, name: str, ttl_s: float) -> bool:
        return bool(self.r.set(P + f"lock:{name}", "1", nx=True, px=max(1, int(ttl_s * 1000))))

    # ------------------------------------------------------------------------------ queues

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in each Celery queue (kombu's Redis transport: a list per priority)."""
        queues = list(queues)
        pipe = self.r.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
            for priority in (3, 6, 9):
                pipe.llen(f"{queue}\x06\x16{priority}")
        counts = [int(n) for n in pipe.execute()]
        return {q: sum(counts[4 * i : 4 * i + 4]) for i, q in enumerate(queues)}


class LoopReads:
    """The API's hot read path, a job and its streams, run on the event loop itself.

    Every client polls these, so they skip FastAPI's thread pool (a hand-off costs more than the
    read: ~0.1 ms on loopback) and redis-py's asyncio client (measured 1.9 ms of API CPU per
    request against 1.3 ms, and a p99 three times longer; docs/benchmarks.md). A read blocks
    the loop only briefly: its socket timeout is :data:`TIMEOUT_S`, and after a failure the
    store counts as down for :data:`BACKOFF_S`, answering at once (a 503) instead of trying,
    so an unreachable Redis stalls the loop for at most two timeouts per back-off period.
    Same keys and answers as :class:`Store`.
    """

    TIMEOUT_S = 1.0
    BACKOFF_S = 1.0

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str) -> LoopReads:
        timeout = cls.TIMEOUT_S
        # One immediate retry (a pooled connection that Redis closed by restarting fails once),
        # not redis-py's default of 3 with back-off: a read blocks the loop for 2 timeouts at most.
        no_retry = Retry(NoBackoff(), 1)
        return cls(
            redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=no_retry,
            )
        )

    def _call(self, action: Callable[[], Any]) -> Any:
        if time.monotonic() < self._down_until:
            raise redis.ConnectionError("the job store failed a moment ago; not retried yet")
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError):
            self._down_until = time.monotonic() + self.BACKOFF_S
            raise

    async def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        raw = self._call(lambda: self.r.hgetall(P + f"job:{job_id}"))
        return _job_of(cast(dict[str, str], raw), tenant)

    async def owns(self, tenant: str, job_id: str) -> bool:
        """Whether the job exists and is ``tenant``'s (one field read, not the whole record)."""
        raw = self._call(lambda: self.r.hget(P + f"job:{job_id}", "tenant"))
        return raw is not None and json.loads(cast(str, raw)) == tenant

    async def read_stream(self, job_id: str, which: str, *, after: str = "0", limit: int = 1000) -> Page:
        low = _stream_low(which, after)
        if low is None:
            return Page(items=[], next_cursor=after)
        rows = self._call(lambda: self.r.xrange(P + f"job:{job_id}:{which}", low, "+", count=limit))
        return _page_of(cast(list[tuple[str, dict[str, str]]], rows), after)
