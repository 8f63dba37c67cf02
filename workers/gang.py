"""A job across machines: gang assignment in the workers' heartbeats, and ``run_node``, the task
that runs one machine's part of it (issue 24; the keys and scripts: ``service.core.store.gangs``).

The path of a job with ``resources.nodes = N``:

1. Submitted, it waits in its queue's line of gangs (``Store.wait_for_gang``), ``queued`` with
   the phase ``waiting for N nodes``; no Celery message is sent for it.
2. Every worker with no job offers itself at each heartbeat (``Store.worker_idle``). The beat
   that holds the queue's gang lock calls :func:`assign_gangs`: one script reserves N idle
   workers for the first job in line, or none, and ``run_node(job, attempt, i)`` goes to each
   reserved worker's own queue (``node.<instance>``).
3. Each node's task joins (:meth:`GangNode.run`). Node 0 writes a marker into the job's folder
   and publishes it with its rendezvous endpoint (``<CHILDTUNE_NODE_ADDR>:<free port>``); every
   other node reads the marker from its own view of the folder, so a folder that is not shared
   fails the job at once, naming the setting. Once all N joined and checked, node 0 claims the
   job (``running``, its nodes recorded for the attempt) and publishes its run id; then every
   node starts its launcher (``workers.launch`` -> torchrun, c10d rendezvous at node 0).
4. Node 0 supervises the job as a one-machine task does (lease, cancel, final status). Any
   node's task watches the others (``ct:gang-node:*`` leases) and the job's run: a lost node,
   a stopping worker or a cancel stops every node's ranks; node 0 then settles the attempt:
   succeeded, failed, cancelled, or back in line at its place (resumed from the last complete
   checkpoint once N workers are free again).

A gang that does not form within ``gang_reserve_s`` (a node whose worker died after it was
picked) is released by node 0 or by any heartbeat (:func:`release_stale_gangs`); the job waits
again at its place and an event says how many nodes joined.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import time
from typing import Any

import redis
from celery import Celery, shared_task

from service.core import env as names
from service.core.jobdir import (
    EVENTS_FILE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    NODE_MARKER,
    atomic_write_text,
    read_jsonl,
)
from service.core.procs import rendezvous_port
from service.core.queue import RUN_NODE, EnqueueError, send_node
from service.core.records import JobRecord, gang_waiting_phase
from service.core.settings import Settings, load_settings
from service.core.store import Store
from service.core.store.gangs import Reservation
from workers.tasks import LEASE_CONFIRM_S, POLL_S, JobRunner, _error_of

__all__ = ["GangNode", "assign_gangs", "release_stale_gangs", "run_node"]

# How long node i > 0 looks for node 0's marker before it calls the job folder not shared.
MARKER_WAIT_S = 5.0

log = logging.getLogger(__name__)


def assign_gangs(store: Store, app: Celery, settings: Settings, queues: list[str]) -> list[str]:
    """Give waiting gangs of ``queues`` their workers while enough are idle, and send each
    reserved worker its node; returns the jobs assigned. A queue with gangs waiting is served
    by one heartbeat at a time (its gang lock, held for a beat); one with none costs one read."""
    assigned: list[str] = []
    for queue in queues:
        if not store.waiting_gangs(queue):
            continue
        if not store.try_lock(f"gangs:{queue}", settings.heartbeat_interval_s):
            continue
        while True:
            gang = store.assign_gang(
                queue, idle_ttl_s=settings.heartbeat_ttl_s, reserve_ttl_s=settings.gang_reserve_s
            )
            if gang is None:
                break
            assigned.append(gang.job_id)
            log.info("gang: job %s attempt %d on %s", gang.job_id, gang.attempt, ", ".join(gang.nodes))
            for node, instance in enumerate(gang.nodes):
                try:
                    send_node(app, instance, gang.job_id, gang.attempt, node)
                except EnqueueError as exc:  # its reservation lapses and the gang is released
                    log.warning("gang: job %s node %d not sent to %s: %s", gang.job_id, node, instance, exc)
    return assigned


def release_stale_gangs(store: Store, settings: Settings) -> list[str]:
    """Release the gangs assigned longer than ``gang_reserve_s`` ago whose nodes have not all
    joined: their workers are free and each job waits again at its place."""
    released = []
    for job_id in store.gangs_forming_since(time.time() - settings.gang_reserve_s):
        gang = store.gang(job_id)
        record = store.get_job(job_id)
        if record is None or "attempt" not in gang:
            continue
        if _release(store, record, int(gang["attempt"]), gang, why="did not form"):
            released.append(job_id)
    return released


def _release(store: Store, record: JobRecord, attempt: int, gang: dict[str, str], *, why: str) -> bool:
    """Release attempt ``attempt``'s gang with the job back in line, and say so in its events."""
    size = int(gang.get("size") or 0)
    joined = int(gang.get("joined") or 0)
    if not store.release_gang(record.id, attempt, record.queue, requeue=True):
        return False
    message = (
        f"the gang of attempt {attempt} {why}: {joined} of {size} nodes joined; waiting for {size} again"
    )
    log.warning("job %s: %s", record.id, message)
    store.append_event(
        record.id,
        {
            "type": "gang",
            "attempt": attempt,
            "joined": joined,
            "nodes": size,
            "message": message,
            "time": time.time(),
        },
    )
    if record.status == "queued":
        store.update_job(record.id, phase=gang_waiting_phase(size))
    return True


class GangNode(JobRunner):
    """Node ``reservation.node`` of a gang: the task of one reserved worker (see the module
    docstring). Node 0 also supervises the job's record, as :class:`JobRunner` does."""

    def __init__(
        self, settings: Settings, store: Store, reservation: Reservation, hostname: str, instance: str
    ) -> None:
        super().__init__(settings, store, reservation.job_id, hostname, instance)
        self.attempt = reservation.attempt
        self.node = reservation.node
        self.reservation = reservation
        self.size = 0
        self.leader_run: str | None = None
        self.claimed_at = float("inf")  # (node 0: when it claimed the job)
        self.launcher_name = f"node {reservation.node}'s launcher"

    # -- the gang's shared fields ------------------------------------------------------------

    def _gang(self) -> dict[str, str] | None:
        """The gang's fields while this attempt is current and not released, else None."""
        gang = self.store.gang(self.job_id)
        if gang.get("attempt") != str(self.attempt) or "size" not in gang:
            return None
        return gang

    def _beat(self) -> None:
        self.store.renew_node(self.job_id, self.attempt, self.node, self.settings.heartbeat_ttl_s)
        self.store.worker_busy(self.instance, [], self.job_id)

    def _lost_nodes(self, absent_since: dict[int, float]) -> list[int]:
        """The other nodes whose task has stopped renewing its lease for ``LEASE_CONFIRM_S``."""
        now, lost = time.monotonic(), []
        for other in range(self.size):
            if other == self.node or self.store.node_alive(self.job_id, self.attempt, other):
                absent_since.pop(other, None)
                continue
            since = absent_since.setdefault(other, now)
            if now - since >= max(LEASE_CONFIRM_S, 2 * POLL_S):
                lost.append(other)
        return lost

    # -- the task ----------------------------------------------------------------------------

    def run(self) -> str:
        joined = self._retry(
            "joining the gang", lambda: self.store.join_gang(self.reservation, self.instance)
        )
        if joined is None:
            log.info(
                "job %s: node %d of attempt %d: reservation gone; not starting",
                self.job_id,
                self.node,
                self.attempt,
            )
            return "released"
        self.size = joined[1]
        try:
            return self._lead() if self.node == 0 else self._follow()
        finally:
            with contextlib.suppress(OSError, redis.RedisError):
                self.store.worker_free(self.instance, self.job_id)
                self.store.drop_node(self.job_id, self.attempt, self.node)

    def _deadline(self, gang: dict[str, str]) -> float:
        """When this attempt's gang must have formed (as a ``time.time()``)."""
        return float(gang.get("assigned_at") or time.time()) + self.settings.gang_reserve_s

    def _lead(self) -> str:
        record = self.store.get_job(self.job_id)
        gang = self._gang()
        if record is None or gang is None or record.status != "queued":
            if gang is not None:
                self._end_gang(record.queue if record else "")
            return "skipped"
        self._write_job_file(record.resolved_spec)
        marker = secrets.token_hex(16)
        atomic_write_text(self.job_dir / NODE_MARKER, marker)
        endpoint = f"{self.settings.node_address}:{rendezvous_port()}"
        self.store.set_gang_fields(self.job_id, self.attempt, endpoint=endpoint, marker=marker)
        deadline = self._deadline(gang)
        while True:
            self._beat()
            gang = self._gang()
            record = self.store.get_job(self.job_id)
            if gang is None or record is None or record.status != "queued":
                if gang is not None and record is not None:
                    self._end_gang(record.queue)
                return "released"
            failures = sorted(v for k, v in gang.items() if k.startswith("fail:"))
            if failures:
                self._end_gang(record.queue)
                self.store.transition(
                    self.job_id, "failed", allowed=("queued",), error=failures[0], finished_at=time.time()
                )
                self._advance_experiment()
                return "failed"
            ready = all(gang.get(f"ready:{i}") for i in range(1, self.size))
            if int(gang.get("joined") or 0) >= self.size and ready:
                break
            if time.time() > deadline:
                _release(
                    self.store,
                    record,
                    self.attempt,
                    gang,
                    why=f"did not form within {self.settings.gang_reserve_s:.0f} s",
                )
                return "not formed"
            if self._stopping():
                _release(
                    self.store,
                    record,
                    self.attempt,
                    gang,
                    why=f"lost node 0 ({self.hostname}), which is stopping",
                )
                return "stopping"
            time.sleep(POLL_S)
        return self._start_leading(record, gang)

    def _start_leading(self, record: JobRecord, gang: dict[str, str]) -> str:
        nodes = []
        for i in range(self.size):
            info = self.store.worker_info(gang[f"node:{i}"])
            nodes.append({"node": i, "worker": info.get("hostname", "?"), "addr": info.get("addr", "?")})
        self.claimed_at = time.time()
        if not self._take(record, "queued", nodes):  # cancelled meanwhile
            self._end_gang(record.queue)
            return "skipped"
        self._retry("taking the lease", self._renew)
        where = ", ".join(f"node {n['node']} {n['worker']} ({n['addr']})" for n in nodes)
        self.store.append_event(
            self.job_id,
            {
                "type": "gang",
                "attempt": self.attempt,
                "nodes": self.size,
                "message": f"started on {where}",
                "time": time.time(),
            },
        )
        self.store.set_gang_fields(self.job_id, self.attempt, run=self.run_id)
        try:
            proc = self._start_node(gang["endpoint"])
        except Exception as exc:
            self._finish("failed", error=f"could not start the training launcher: {exc}")
            self._end_gang(record.queue)
            return "failed"
        return self._watch_leading(proc, record.queue)

    def _follow(self) -> str:
        gang = self._gang()
        if gang is None:
            return "released"
        deadline = self._deadline(gang)
        checked = False
        while True:
            self._beat()
            gang = self._gang()
            if gang is None:
                return "released"
            if not checked and "marker" in gang:
                problem = self._shared_folder_problem(gang["marker"])
                if problem is not None:
                    self.store.set_gang_fields(self.job_id, self.attempt, **{f"fail:{self.node}": problem})
                    return "failed (folder not shared)"
                self.store.set_gang_fields(self.job_id, self.attempt, **{f"ready:{self.node}": "1"})
                checked = True
            if checked and "run" in gang:
                break
            if time.time() > deadline + 10 * POLL_S or self._stopping():
                return "not formed"
            time.sleep(POLL_S)
        self.leader_run = gang["run"]
        try:
            proc = self._start_node(gang["endpoint"])
        except Exception as exc:
            self.store.set_gang_fields(
                self.job_id, self.attempt, **{f"exit:{self.node}": f"not started: {exc}"}
            )
            return "failed to start"
        return self._watch_following(proc)

    def _shared_folder_problem(self, marker: str) -> str | None:
        """None when this node sees node 0's marker in the job's folder, else the job's error.
        A network filesystem may show a new file late (cached lookups): read it again for up
        to :data:`MARKER_WAIT_S` before calling the folder not shared."""
        path = self.job_dir / NODE_MARKER
        deadline = time.monotonic() + MARKER_WAIT_S
        while True:
            try:
                seen: str | None = path.read_text().strip()
            except OSError:
                seen = None
            if seen == marker:
                return None
            if time.monotonic() > deadline:
                break
            self._beat()
            time.sleep(POLL_S)
        return (
            f"resources.nodes: node {self.node} ({self.hostname}) does not see the job folder that node "
            f"0 wrote ({'no' if seen is None else 'another'} marker at {path}): every worker of a multi-node "
            f"job must have the same shared filesystem (NFS, EFS, CephFS...) mounted at {names.ARTIFACTS}; "
            "see docs/deploy.md, jobs larger than one machine"
        )

    def _start_node(self, endpoint: str) -> subprocess.Popen[bytes]:
        from workers.launch import NodeSpec

        node = NodeSpec(
            nnodes=self.size,
            node=self.node,
            endpoint=endpoint,
            rdzv_id=f"{self.job_id}-{self.attempt}",
            local_addr=self.settings.node_address,
            timeout_s=self.settings.rendezvous_timeout_s,
        )
        return self._launch(node)

    # -- watching ----------------------------------------------------------------------------

    def _watch_following(self, proc: subprocess.Popen[bytes]) -> str:
        """Run this node's ranks until they end, the job's run changes (node 0 settled the
        attempt), a node is lost, the job is cancelled or this worker stops."""
        absent: dict[int, float] = {}

        def check() -> str:
            record = self.store.get_job(self.job_id)
            if record is None or record.run_id != self.leader_run or record.status != "running":
                return "attempt over"
            return "node lost" if self._lost_nodes(absent) else ""

        code, reason = self._supervise(proc, self._beat, check, every_s=1.0)
        with contextlib.suppress(OSError, redis.RedisError):
            self.store.set_gang_fields(self.job_id, self.attempt, **{f"exit:{self.node}": str(code)})
        if self._worker_gone():
            os._exit(EXIT_INTERRUPTED)
        return reason or f"exited {code}"

    def _watch_leading(self, proc: subprocess.Popen[bytes], queue: str) -> str:
        absent: dict[int, float] = {}
        lost: list[int] = []

        def beat() -> None:
            self._renew()  # (the job's lease, and this worker busy with it)
            self.store.renew_node(self.job_id, self.attempt, self.node, self.settings.heartbeat_ttl_s)

        def check() -> str:
            nonlocal lost
            lost = self._lost_nodes(absent)
            return self._superseded() or ("node lost" if lost else "")

        code, reason = self._supervise(proc, beat, check, every_s=1.0)
        if reason == "superseded":
            return reason
        if reason == "cancel":
            self._finish("cancelled")
            self._end_gang(queue)
            return "cancelled"
        if code == EXIT_OK and not reason:
            self._finish("succeeded")
            self._end_gang(queue)
            return "succeeded"
        if not reason:  # the ranks ended by themselves: was a node lost?
            lost = self._peers_lost()
            if code != EXIT_INTERRUPTED and not lost:
                if self._ranks_started():
                    self._finish(
                        "failed", error=_error_of(self.job_dir, int(code if code is not None else -1))
                    )
                    self._end_gang(queue)
                    return "failed"
                reason = "rendezvous"  # no rank of this attempt ever ran: the nodes did not meet
        return self._back_in_line(queue, reason, lost)

    def _ranks_started(self) -> bool:
        """Whether rank 0 of this attempt wrote an event (its first phase, first thing; the
        launcher writes none): if not, the nodes' torchruns never completed their rendezvous,
        or a node's never started."""
        events = read_jsonl(self.job_dir / EVENTS_FILE)
        return bool(events) and float(events[-1].get("time") or 0) >= self.claimed_at

    def _peers_lost(self) -> list[int]:
        """After node 0's ranks ended: the other nodes that were lost or stopped (their ranks
        ended by a signal or interrupted), waiting for each to say so or for its lease to lapse
        (a node killed outright says nothing)."""
        deadline = time.monotonic() + self.settings.heartbeat_ttl_s + 2 * LEASE_CONFIRM_S
        absent: dict[int, float] = {}
        while True:
            gang = self.store.gang(self.job_id)
            exits = {i: gang.get(f"exit:{i}") for i in range(1, self.size)}
            lost = set(self._lost_nodes(absent))
            lost |= {i for i, code in exits.items() if code is not None and code not in ("1", "2")}
            if lost or all(code is not None for code in exits.values()) or time.monotonic() > deadline:
                return sorted(lost)
            time.sleep(POLL_S)

    def _what_became_of(self, lost: list[int], record: JobRecord | None) -> str:
        """The lost nodes in words: each by its worker, with what it reported, if anything."""
        gang = self.store.gang(self.job_id)
        machines = {
            n["node"]: n["worker"] for n in (record.nodes[-1]["nodes"] if record and record.nodes else [])
        }
        parts = []
        for i in lost:
            said = gang.get(f"exit:{i}")
            if said is None:
                state = "stopped responding"
            elif said.lstrip("-").isdigit():
                code = int(said)
                state = (
                    "stopped its ranks (interrupted)"
                    if code == EXIT_INTERRUPTED
                    else f"lost its launcher to signal {-code}"
                    if code < 0
                    else f"ended with exit code {code}"
                )
            else:
                state = f"ended: {said}"
            parts.append(f"node {i} ({machines.get(i, '?')}) {state}")
        return "; ".join(parts) or "a node stopped"

    def _back_in_line(self, queue: str, reason: str, lost: list[int]) -> str:
        """The attempt ended without an outcome of the job's own: back in line for N workers
        (resumed from its last complete checkpoint), or failed after ``max_attempts``."""
        self._retry("recording the stop", self._sync_streams)
        record = self._retry("reading the job", lambda: self.store.get_job(self.job_id))
        why = {
            "shutdown": f"node 0's worker ({self.hostname}) is stopping",
            "node lost": self._what_became_of(lost, record),
            "rendezvous": (
                "its ranks never started: the nodes' torchruns did not meet at node 0's rendezvous "
                f"within {self.settings.rendezvous_timeout_s:.0f} s (CHILDTUNE_RENDEZVOUS_TIMEOUT_S; is "
                "the port open between the nodes? see each node's launcher log)"
            ),
        }.get(reason, self._what_became_of(lost, record) if lost else "it was interrupted")
        if record is not None and record.attempts >= self.settings.max_attempts:
            self._finish(
                "failed", error=f"attempt {record.attempts} of {self.settings.max_attempts} ended: {why}"
            )
            self._end_gang(queue)
            return "failed (attempts)"
        self._retry("requeueing", lambda: self.store.requeue(self.job_id, self.run_id))
        self._release()
        gang = self.store.gang(self.job_id)
        if record is not None:
            _release(
                self.store,
                record.model_copy(update={"status": "queued"}),
                self.attempt,
                gang,
                why=f"stopped: {why}",
            )
        if self._worker_gone():
            os._exit(EXIT_INTERRUPTED)
        return "requeued"

    def _end_gang(self, queue: str) -> None:
        with contextlib.suppress(OSError, redis.RedisError):
            self.store.release_gang(self.job_id, self.attempt, queue, requeue=False)


@shared_task(name=RUN_NODE, bind=True, acks_late=False, ignore_result=True)
def run_node(self: Any, job_id: str, attempt: int, node: int) -> str:
    """Run node ``node`` of attempt ``attempt`` of the multi-node job ``job_id`` on this
    (reserved) worker. Acknowledged at once: a node message is never redelivered; a node that
    does not join is handled by the gang's timeout."""
    settings = load_settings()
    store = Store.from_url(settings.redis_url)
    instance = os.environ.get(names.WORKER_INSTANCE) or f"{self.request.hostname}-{os.getppid()}"
    reservation = Reservation(job_id, int(attempt), int(node))
    return GangNode(settings, store, reservation, str(self.request.hostname), instance).run()
