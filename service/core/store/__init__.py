"""The store on Redis: the one place that knows the keys. A package of one module per kind of
data (``jobs``, ``experiments``, ``streams``, ``files``, ``webhooks``, ``workers``), their Lua
scripts beside them (``scripts/``), and the API's event-loop reads (``loop_reads``); the
records themselves are ``service.core.records``.

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
- Webhooks (delivered by ``service.core.webhooks``): ``ct:webhooks:due`` sorted set (job or experiment id
  -> when its notification's next attempt is due; added by the status change to final, or the
  experiment's close, in the same script), ``ct:webhook:<job or exp id>`` (a
  :class:`WebhookDelivery` as JSON, expiring once settled), ``ct:tenant:<t>:webhooks`` sorted
  set (its latest deliveries) and ``ct:tenant:<t>:webhook-secret`` hash (secret, created_at).

- Gangs (jobs of several machines, :mod:`service.core.store.gangs`): ``ct:gangs:<queue>``
  sorted set (waiting jobs by place), ``ct:idle:<queue>`` sorted set (idle workers -> beat),
  ``ct:assigned:<instance>`` (a worker's reservation, expiring), ``ct:gang:<job>`` hash,
  ``ct:gang-need`` hash, ``ct:gangs-forming`` sorted set, ``ct:gang-seq``.

Status changes go through one Lua script (``scripts/transition.lua``, :meth:`Store.transition`),
so a cancel racing with a claim, or a reaper racing with a finishing task, leaves one consistent
answer.
"""

from __future__ import annotations

import redis

from service.core.store.experiments import ExperimentStore
from service.core.store.files import FileStore
from service.core.store.gangs import GangStore
from service.core.store.jobs import JobStore
from service.core.store.loop_reads import LoopReads
from service.core.store.streams import StreamStore
from service.core.store.webhooks import WebhookStore
from service.core.store.workers import WorkerStore

__all__ = ["LoopReads", "Store"]


class Store(JobStore, ExperimentStore, StreamStore, FileStore, WebhookStore, WorkerStore, GangStore):
    """Jobs, experiments, streams, files, webhook deliveries, workers and gangs in one Redis database."""

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 5.0) -> Store:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        return cls(client)
