"""Jobs: create, read, list and count them; cancel flags; run leases; the one way a run ends
or goes back to the queue. Status changes go through ``StoreBase.transition`` (one Lua script)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast

from service.core.contract.vocabulary import STATUSES
from service.core.records import JobRecord, Page, Transition
from service.core.store.base import P, StoreBase, dumps, job_of


class JobStore(StoreBase):
    """``ct:job:<id>``, ``ct:status:<status>``, ``ct:tenant:<t>:jobs``, ``:cancel`` and ``:lease``."""

    def create_job(self, record: JobRecord) -> JobRecord:
        """Write a new job (status ``queued``) and index it for its tenant."""
        seq = int(cast(int, self.r.incr(P + "seq")))
        record = record.model_copy(update={"seq": seq, "status": "queued"})
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(P + f"job:{record.id}", mapping={k: dumps(v) for k, v in record.model_dump().items()})
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
        return [job_of(cast(dict[str, str], raw), None) for raw in pipe.execute()]

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
