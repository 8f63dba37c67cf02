"""Experiments: an experiment and its jobs written at once, paged by tenant, and the slots
that bound how many of its jobs run (``scripts/claim_slots.lua``, ``close_experiment.lua``)."""

from __future__ import annotations

import time
from typing import cast

from service.core.records import WAITING, ExperimentRecord, JobRecord, Page
from service.core.store.base import P, StoreBase, dumps, record_of


class ExperimentStore(StoreBase):
    """``ct:exp:<id>``, ``ct:tenant:<t>:exps``, ``:pending``, ``:active`` and ``ct:exps:open``."""

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
            pipe.hset(P + f"job:{job.id}", mapping={k: dumps(v) for k, v in job.model_dump().items()})
            pipe.zadd(P + f"tenant:{job.tenant}:jobs", {job.id: job.seq})
            pipe.sadd(P + "status:queued", job.id)
        pipe.hset(
            P + f"exp:{experiment.id}", mapping={k: dumps(v) for k, v in experiment.model_dump().items()}
        )
        pipe.zadd(P + f"tenant:{experiment.tenant}:exps", {experiment.id: experiment.seq})
        pipe.rpush(P + f"exp:{experiment.id}:pending", *[job.id for job in jobs])
        pipe.sadd(P + "exps:open", experiment.id)
        pipe.execute()
        return experiment

    def get_experiment(self, exp_id: str, tenant: str | None = None) -> ExperimentRecord | None:
        """The experiment, or None when missing (or another tenant's than ``tenant``)."""
        return record_of(ExperimentRecord, cast(dict[str, str], self.r.hgetall(P + f"exp:{exp_id}")), tenant)

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

    def dispatched(self, job_id: str, phase: str | None = None) -> None:
        """The job's message is sent: it is an ordinary queued job now (phase cleared, or the
        phase of a job of several machines waiting in line)."""
        self.transition(job_id, None, allowed=("queued",), phase=phase)

    def active_jobs(self, exp_id: str) -> dict[str, float]:
        """The experiment's jobs holding a slot -> when they got it."""
        rows = self.r.zrange(P + f"exp:{exp_id}:active", 0, -1, withscores=True)
        return {job_id: float(at) for job_id, at in cast(list[tuple[str, float]], rows)}

    def drop_pending(self, exp_id: str) -> None:
        self.r.delete(P + f"exp:{exp_id}:pending")

    def request_experiment_cancel(self, exp_id: str) -> None:
        self.r.hset(P + f"exp:{exp_id}", "cancel_requested", dumps(True))

    def open_experiments(self) -> list[str]:
        return sorted(cast(set[str], self.r.smembers(P + "exps:open")))

    def close_experiment(self, exp_id: str) -> None:
        """Every job of the experiment has finished: no more dispatching for it (and, the first
        time, its webhook notification is due, in the same atomic step)."""
        keys = [P + "exps:open", P + f"exp:{exp_id}:pending", P + f"exp:{exp_id}:active", P + f"exp:{exp_id}"]
        self._close_experiment(keys=keys, args=[exp_id])
