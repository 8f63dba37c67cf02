"""Gangs: a job that needs several machines starts only when that many workers are reserved for
it, all at once (issue 24).

A multi-node job waits in its queue's waiting set (``ct:gangs:<queue>``, by place) instead of
being sent to Celery. Idle workers stand in ``ct:idle:<queue>`` (instance -> last idle beat). A
worker heartbeat (or the API after a submit) calls :meth:`GangStore.assign_gang`: one script
gives the first waiting job all of its nodes from the live idle workers, or nothing, so two
multi-node jobs can never each hold part of the machines and wait for each other. Each chosen
worker is reserved (``ct:assigned:<instance>``, expiring); the caller sends each its node's
message. A worker about to run a job from a shared queue calls :meth:`worker_busy` first: in one
step with the assignment it either learns of its reservation or leaves the idle sets.

A node consumes its reservation with :meth:`join_gang`; a gang whose nodes do not all join in
time is released (:meth:`release_gang`): its workers are free and the job waits again at its
place. Keys: ``ct:gang:<job>`` hash (attempt, size, place, assigned_at, joined, node:<i>; then what
the nodes tell each other: endpoint, marker, run, exit:<i>, fail:<i>), ``ct:gang-need`` hash
(job -> nodes), ``ct:gangs-forming`` sorted set (job -> assigned_at), ``ct:busy:<instance>``
(job -> last renewal: what a worker runs), ``ct:gang-node:<job>:<attempt>:<i>`` (node i's
task is alive). The protocol between the nodes is ``workers/gang.py``'s.
"""

from __future__ import annotations

import time
from typing import NamedTuple, cast

from redis.exceptions import WatchError

from service.core.store.base import P, StoreBase


class GangAssignment(NamedTuple):
    """Attempt ``attempt`` of ``job_id``'s gang: ``nodes[i]`` is the worker instance of node i."""

    job_id: str
    attempt: int
    nodes: list[str]


class Reservation(NamedTuple):
    """What a reserved worker was picked for: node ``node`` of attempt ``attempt`` of a job."""

    job_id: str
    attempt: int
    node: int

    @classmethod
    def parse(cls, text: str) -> Reservation:
        job_id, attempt, node = text.split(" ")
        return cls(job_id, int(attempt), int(node))


class GangStore(StoreBase):
    """The gang keys above; the scripts are ``scripts/gang_*.lua``."""

    def wait_for_gang(self, job_id: str, queue: str, nodes: int) -> None:
        """Put a queued job of ``nodes`` machines at the end of ``queue``'s waiting gangs."""
        if nodes < 1:
            raise ValueError(f"nodes: expected at least 1, got {nodes}")
        place = int(self.r.incr(P + "gang-seq"))
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(P + "gang-need", job_id, nodes)
        pipe.zadd(P + f"gangs:{queue}", {job_id: place}, nx=True)
        pipe.execute()

    def waiting_gangs(self, queue: str) -> list[str]:
        return cast(list[str], self.r.zrange(P + f"gangs:{queue}", 0, -1))

    def _worker_script(
        self, what: str, instance: str, queues: list[str], job_id: str = "", busy_ttl_s: float = 0
    ) -> Reservation | None:
        held = self._gang_worker(
            keys=[P + f"assigned:{instance}", P + f"busy:{instance}"],
            args=[what, instance, ",".join(queues), time.time(), job_id, busy_ttl_s],
        )
        return Reservation.parse(cast(str, held)) if held else None

    def worker_idle(self, instance: str, queues: list[str], *, busy_ttl_s: float) -> Reservation | None:
        """A worker's heartbeat: with no job (none renewed within ``busy_ttl_s``) it offers itself
        to gangs, else it leaves the idle sets. Returns its reservation when a gang picked it."""
        return self._worker_script("idle", instance, queues, busy_ttl_s=busy_ttl_s)

    def worker_busy(self, instance: str, queues: list[str], job_id: str) -> Reservation | None:
        """A worker about to run ``job_id`` (or renewing it, every poll of its task): recorded,
        and out of the idle sets, unless a gang reserved it first (then that reservation is
        returned and nothing is recorded: serve the gang, give the message back)."""
        return self._worker_script("busy", instance, queues, job_id)

    def worker_free(self, instance: str, job_id: str) -> None:
        """The worker's run of ``job_id`` is over."""
        self._worker_script("free", instance, [], job_id)

    def idle_workers(self, queue: str, ttl_s: float) -> list[str]:
        return cast(list[str], self.r.zrangebyscore(P + f"idle:{queue}", time.time() - ttl_s, "+inf"))

    def reservation(self, instance: str) -> Reservation | None:
        held = self.r.get(P + f"assigned:{instance}")
        return Reservation.parse(cast(str, held)) if held else None

    def assign_gang(self, queue: str, *, idle_ttl_s: float, reserve_ttl_s: float) -> GangAssignment | None:
        """Give the first waiting job of ``queue`` all of its nodes, or nothing (one script)."""
        out = cast(
            list[str],
            self._gang_assign(
                keys=[P + f"gangs:{queue}", P + f"idle:{queue}"],
                args=[time.time(), idle_ttl_s, max(1, int(reserve_ttl_s * 1000))],
            ),
        )
        if not out:
            return None
        return GangAssignment(out[0], int(out[1]), list(out[2:]))

    def join_gang(self, reservation: Reservation, instance: str) -> tuple[int, int] | None:
        """Node ``reservation.node`` starts: (nodes joined so far, gang size), or None when the
        reservation was released or expired (the node must not start)."""
        job_id, attempt, node = reservation
        out = cast(
            list[int],
            self._gang_join(
                keys=[P + f"gang:{job_id}", P + f"assigned:{instance}", P + f"busy:{instance}"],
                args=[job_id, attempt, node, instance, time.time()],
            ),
        )
        return (int(out[0]), int(out[1])) if out else None

    def release_gang(self, job_id: str, attempt: int, queue: str, *, requeue: bool) -> bool:
        """End ``attempt`` of the job's gang: its workers are free; with ``requeue`` the job waits
        again at its place. False when another attempt is current (nothing done)."""
        done = self._gang_release(
            keys=[P + f"gang:{job_id}", P + f"gangs:{queue}"], args=[job_id, attempt, "1" if requeue else "0"]
        )
        return bool(done)

    def gang(self, job_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.r.hgetall(P + f"gang:{job_id}"))

    def set_gang_fields(self, job_id: str, attempt: int, **fields: str) -> bool:
        """Write fields of attempt ``attempt``'s gang (its endpoint, its run, a node's exit...);
        False (nothing written) when another attempt is current or it was released."""
        key = P + f"gang:{job_id}"
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.hget(key, "attempt") != str(attempt) or not pipe.hexists(key, "size"):
                        pipe.reset()
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
                    pipe.execute()
                    return True
                except WatchError:
                    continue

    def renew_node(self, job_id: str, attempt: int, node: int, ttl_s: float) -> None:
        """Node ``node`` of the attempt is alive (its task renews this every poll)."""
        self.r.set(P + f"gang-node:{job_id}:{attempt}:{node}", "1", px=max(1, int(ttl_s * 1000)))

    def node_alive(self, job_id: str, attempt: int, node: int) -> bool:
        return bool(self.r.exists(P + f"gang-node:{job_id}:{attempt}:{node}"))

    def drop_node(self, job_id: str, attempt: int, node: int) -> None:
        self.r.delete(P + f"gang-node:{job_id}:{attempt}:{node}")

    def gangs_forming_since(self, before: float) -> list[str]:
        """Jobs whose gang was assigned before ``before`` and has not fully joined yet."""
        return cast(list[str], self.r.zrangebyscore(P + "gangs-forming", "-inf", before))
