"""The training program's sink that streams rank 0's records into the job store (Redis).

Named by the task in ``CHILDTUNE_SINKS=workers.redis_sink:factory``; the training program calls
``factory(job_dir, spec)`` once on rank 0 and then ``metric``/``event`` for every record of
``metrics.jsonl``/``events.jsonl``. Each metric record is stored once per (kind, step): a
resumed run re-emitting steps it already sent is ignored. The job record follows along:
phase, step and total steps, latest train loss, latest and best evaluation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from service.contract import JobSpec
from service.store import Store

__all__ = ["REDIS_URL_ENV", "RedisSink", "factory"]

REDIS_URL_ENV = "CHILDTUNE_REDIS_URL"
log = logging.getLogger(__name__)


class RedisSink:
    """Appends records to the job's streams and keeps the job record's progress current."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id

    def metric(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        fields: dict[str, Any] = {}
        step = record.get("step")
        if isinstance(step, int):
            fields["step"] = step
        if isinstance(record.get("total_steps"), int):
            fields["total_steps"] = record["total_steps"]
        if kind == "train":
            fields["latest_train"] = record
        elif kind == "eval":
            fields["latest_eval"] = record
            if record.get("is_best"):
                fields["best_eval"] = record
        self.store.append_metric(self.job_id, record, **fields)

    def event(self, record: dict[str, Any]) -> None:
        self.store.append_event(self.job_id, record)
        kind = record.get("type")
        if kind == "phase" and isinstance(record.get("phase"), str):
            self.store.update_job(self.job_id, phase=record["phase"])
        elif kind == "started" and isinstance(record.get("total_steps"), int):
            self.store.update_job(self.job_id, total_steps=record["total_steps"])

    def close(self) -> None:
        self.store.r.close()


def factory(job_dir: Path, spec: JobSpec) -> RedisSink | None:
    """The sink of the job in ``job_dir`` (its name is the job id); None without a Redis URL."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        log.warning("%s is not set: no Redis sink for %s", REDIS_URL_ENV, job_dir)
        return None
    store = Store.from_url(url)
    store.ping()
    return RedisSink(store, Path(job_dir).name)
