"""The records the store keeps, and their ids: what a job, an experiment, an uploaded file and a
webhook delivery are once stored. Pure data: no Redis here (``service.core.store`` reads and
writes them), so the API's schemas, the experiments' summaries and the workers import them
without the store.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "DISPATCHING",
    "U64_MAX",
    "WAITING",
    "ExperimentRecord",
    "FileRecord",
    "JobRecord",
    "Page",
    "Transition",
    "WebhookDelivery",
    "gang_waiting_phase",
    "new_experiment_id",
    "new_file_id",
    "new_job_id",
    "valid_cursor",
    "valid_experiment_id",
    "valid_file_id",
    "valid_job_id",
]

_JOB_ID = re.compile(r"^job-[0-9a-f]{16}$")
_FILE_ID = re.compile(r"^file-[0-9a-f]{16}$")
_EXP_ID = re.compile(r"^exp-[0-9a-f]{16}$")
_STREAM_ID = re.compile(r"^(0|\d{1,20}-\d{1,20})$")
U64_MAX = 2**64 - 1  # the largest part of a Redis stream id


def new_job_id() -> str:
    return f"job-{secrets.token_hex(8)}"


def new_file_id() -> str:
    return f"file-{secrets.token_hex(8)}"


def new_experiment_id() -> str:
    return f"exp-{secrets.token_hex(8)}"


def valid_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text))


def valid_file_id(text: str) -> bool:
    return bool(_FILE_ID.match(text))


def valid_experiment_id(text: str) -> bool:
    return bool(_EXP_ID.match(text))


def valid_cursor(text: str) -> bool:
    """A stream cursor: ``0`` (from the start) or an entry id ``<ms>-<seq>``, each part a
    64-bit unsigned number as Redis requires (a larger part would make Redis raise)."""
    if not _STREAM_ID.match(text):
        return False
    return all(int(part) <= U64_MAX for part in text.split("-"))


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
    # The machines of each attempt: {"attempt": n, "nodes": [{"node": i, "worker": hostname,
    # "addr": address}, ...]} (one node for a one-machine job).
    nodes: list[dict[str, Any]] = Field(default_factory=list)


WAITING = "waiting"  # the phase of an experiment's queued job held back by its max_parallel
DISPATCHING = "dispatching"  # given a slot; its message is being sent


def gang_waiting_phase(nodes: int) -> str:
    """The phase of a queued job of several machines, in line until that many workers are free."""
    return f"waiting for {nodes} nodes"


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
    """The answer of ``Store.transition``: ``ok`` when applied; ``previous`` = status before."""

    ok: bool
    previous: str | None
