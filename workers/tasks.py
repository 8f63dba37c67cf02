"""The Celery task that runs one job: claim it, start the launcher, watch it, record the outcome.

``run_job(job_id)`` takes only the id; everything else is in the store. The launcher (N rank
processes) runs in its own process session and is stopped by signalling its whole process
group: SIGTERM, a grace period, SIGKILL. What ends a run:

- the launcher exits: 0 -> ``succeeded``; 1 or 2 -> ``failed`` with the error of ``status.json``;
  75 (interrupted by someone else's SIGTERM) -> back to ``queued``;
- a cancel (flag in the store, polled every 0.5 s) -> ``cancelled``;
- this worker shutting down (its stop flag, or its main process gone) -> back to ``queued``;
  the task then waits for the worker's cold shutdown, which puts the unacknowledged message
  back on the queue. The next worker resumes the job from its latest checkpoint.

A message for a job that is not ``queued`` (finished, cancelled, or claimed by another worker
after a redelivery) is dropped: at most one worker runs a job at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from celery import shared_task

from service.core import env as names
from service.core.contract import load_spec
from service.core.jobdir import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    JOB_FILE,
    LAUNCHER_LOG,
    atomic_write_text,
    node_launcher_log,
    read_status,
)
from service.core.procs import die_with_parent, stop_group
from service.core.queue import RUN_JOB
from service.core.records import JobRecord
from service.core.resolve import resolved_problem
from service.core.settings import Settings, load_settings
from service.core.store import Store

if TYPE_CHECKING:
    from workers.launch import NodeSpec

__all__ = ["JobRunner", "run_job"]

log = logging.getLogger(__name__)

POLL_S = 0.5
# A run's lease must stay absent this long (seen by one observer) before its job is taken over:
# a live task renews it within POLL_S of the store coming back from an outage.
LEASE_CONFIRM_S = 2.0
RETRY_MAX_S = 5.0
DISK_LOW_BYTES = 1 << 20
T = TypeVar("T")


def _launcher_preexec() -> None:
    """In the launcher's process: default signal dispositions (Celery's pool children ignore
    SIGINT/SIGTERM and a child inherits that), and SIGTERM when the task's process dies."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    die_with_parent(signal.SIGTERM)


def _disk_note(job_dir: Path) -> str:
    """A note when the job's folder cannot take more writes (full, or read-only), else ''."""
    try:
        usage = shutil.disk_usage(job_dir)
    except OSError:
        return ""
    if usage.free < DISK_LOW_BYTES:
        return f" (the artifact folder has {usage.free} bytes free: free space there and resubmit)"
    if not os.access(job_dir, os.W_OK):
        return " (the artifact folder is not writable)"
    return ""


def _error_of(job_dir: Path, code: int) -> str:
    """The job's error (``status.json``'s, else the launcher log's last line, else the exit
    code), with a note when the disk is why."""
    return _reported_error(job_dir, code) + _disk_note(job_dir)


def _reported_error(job_dir: Path, code: int) -> str:
    error = read_status(job_dir).get("error")
    if error:
        return str(error)
    with contextlib.suppress(OSError):
        lines = [x for x in (job_dir / LAUNCHER_LOG).read_text(errors="replace").splitlines() if x.strip()]
        if lines:
            return f"the launcher exited with code {code}: {lines[-1].strip()[:500]}"
    if code < 0:
        return f"the launcher was killed by signal {-code}"
    return f"the launcher exited with code {code} (see launcher.log in the job directory)"


class JobRunner:
    """One delivery of ``run_job``: the claim, the launcher's life, the final status."""

    def __init__(self, settings: Settings, store: Store, job_id: str, hostname: str, instance: str) -> None:
        self.settings = settings
        self.store = store
        self.job_id = job_id
        self.hostname = hostname
        self.instance = instance
        self.run_id = uuid.uuid4().hex
        self.job_dir = settings.jobs_dir / job_id
        self.parent_pid = os.getppid()

    def _worker_gone(self) -> bool:
        return os.getppid() != self.parent_pid

    def _stopping(self) -> bool:
        if self._worker_gone():
            return True
        try:
            return self.store.worker_stopping(self.instance)
        except (OSError, redis.RedisError):
            return False

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """``action()`` until the store answers (it may be restarting), with backoff.

        While the store is away nothing can be recorded anyway; the job's run keeps its state in
        the job directory. If the worker itself dies meanwhile, this process exits: the reaper
        of another worker settles the job from its directory.
        """
        delay, failing_since = 0.2, None
        while True:
            try:
                result = action()
            except (OSError, redis.RedisError) as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("job %s: store unreachable (%s) while %s; retrying", self.job_id, exc, what)
                if self._worker_gone():
                    os._exit(EXIT_INTERRUPTED)
                time.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            if failing_since is not None:
                log.warning(
                    "job %s: store back after %.1f s (%s)",
                    self.job_id,
                    time.monotonic() - failing_since,
                    what,
                )
            return result

    def _enqueue_again(self) -> None:
        """A fresh message for the (queued) job: its old one is held by a dead worker until the
        broker's visibility timeout, far too long to wait."""
        from service.core.queue import enqueue, make_celery

        record = self._retry("requeueing", lambda: self.store.get_job(self.job_id))
        if record is not None and record.status == "queued":
            enqueue(make_celery(self.settings), self.job_id, record.queue)

    def _wait_for_requeue(self, on_worker_gone: Callable[[], None] | None = None) -> None:
        """Hold the message unacknowledged until the worker's cold shutdown requeues it."""
        log.info("job %s: worker %s is stopping; the job goes back to the queue", self.job_id, self.hostname)
        deadline = time.monotonic() + self.settings.soft_shutdown_s + 120
        while time.monotonic() < deadline and not self._worker_gone():
            time.sleep(0.5)
        if self._worker_gone():
            if on_worker_gone is not None:
                on_worker_gone()
            os._exit(EXIT_INTERRUPTED)  # the worker is gone: the broker redelivers after the timeout
        from celery.exceptions import Reject

        raise Reject("worker stopping", requeue=True)

    def _take(self, record: JobRecord, status: str, machines: list[dict[str, Any]] | None = None) -> bool:
        """Make the job ``running`` under this run, from ``status`` as ``record`` saw it (for a
        running job: only while the run that held it is still the recorded one). The attempt's
        ``machines`` (default: this worker alone) are added to the record's ``nodes``."""
        if machines is None:
            machines = [{"node": 0, "worker": self.hostname, "addr": self.settings.node_address}]
        return self.store.transition(
            self.job_id,
            "running",
            allowed=(status,),
            expect_run=record.run_id if status == "running" else None,
            incr_attempts=True,
            run_id=self.run_id,
            worker=self.hostname,
            worker_instance=self.instance,
            started_at=record.started_at or time.time(),
            phase="preparing",
            error=None,
            nodes=[*record.nodes, {"attempt": record.attempts + 1, "nodes": machines}],
        ).ok

    def _claim(self) -> tuple[JobRecord | None, str]:
        """Take the job: a ``queued`` one at once; a ``running`` one only once its run is gone.

        A message comes back for a running job when the task that ran it died (the pool child
        was killed: Celery redelivers at once), or when the broker redelivers a message held too
        long. The run is gone when its lease has lapsed and stays absent for
        :data:`LEASE_CONFIRM_S`; a live run renews it every poll, so its job is left alone.
        """
        ttl = self.settings.heartbeat_ttl_s
        deadline = time.monotonic() + ttl + 2 * LEASE_CONFIRM_S + 5
        absent_since: float | None = None
        while True:
            record = self.store.get_job(self.job_id)
            if record is None:
                return None, "missing"
            if record.status == "queued":
                if self._take(record, "queued"):
                    return record, "claimed"
                continue
            if record.status != "running":
                return None, f"skipped ({record.status})"
            now = time.monotonic()
            if self.store.lease_holder(self.job_id) is not None:
                absent_since = None
            elif absent_since is None:
                absent_since = now
            elif now - absent_since >= LEASE_CONFIRM_S:
                if record.attempts >= self.settings.max_attempts:
                    error = (
                        f"the task supervising this job died, {record.attempts} attempt(s) out of "
                        f"{self.settings.max_attempts}"
                    )
                    self.store.finish_run(self.job_id, record.run_id, "failed", error)
                    return None, "failed (attempts)"
                if self._take(record, "running"):
                    log.warning("job %s: its run %s is gone; taking it over", self.job_id, record.run_id)
                    return record, "taken over"
                continue
            if now > deadline:
                return None, "skipped (running, its run is alive)"
            time.sleep(POLL_S)

    def run(self) -> str:
        if self._stopping():
            self._wait_for_requeue()
        reserved = self._retry(
            "marking this worker busy",
            lambda: self.store.worker_busy(self.instance, self.settings.queue_list, self.job_id),
        )
        if reserved is not None:  # a gang picked this worker first: serve it, give the job back
            from celery.exceptions import Reject

            log.info("job %s: this worker is reserved for %s; the message goes back", self.job_id, reserved)
            raise Reject("reserved for a gang", requeue=True)
        try:
            return self._run()
        finally:
            with contextlib.suppress(OSError, redis.RedisError):
                self.store.worker_free(self.instance, self.job_id)

    def _run(self) -> str:
        record, outcome = self._retry("claiming the job", self._claim)
        if record is None:
            log.info("job %s: message dropped: %s", self.job_id, outcome)
            return outcome
        self._retry("taking the lease", self._renew)
        problem = resolved_problem(record.resolved_spec, record.tenant, self.store, self.settings)
        if problem is not None:
            self._finish("failed", error=f"refused: {problem}")
            return "failed"
        try:
            proc = self._start(record.resolved_spec)
        except Exception as exc:
            self._finish("failed", error=f"could not start the training launcher: {exc}")
            return "failed"
        return self._watch(proc)

    def _renew(self) -> None:
        self.store.renew_lease(self.job_id, self.run_id, self.settings.heartbeat_ttl_s)
        self.store.worker_busy(self.instance, [], self.job_id)

    def _start(self, resolved_spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        self._write_job_file(resolved_spec)
        return self._launch()

    def _write_job_file(self, resolved_spec: dict[str, Any]) -> None:
        spec = load_spec(resolved_spec)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.job_dir / JOB_FILE, json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")

    def _launch(self, node: NodeSpec | None = None) -> subprocess.Popen[bytes]:
        """The job's launcher (ranks and device: from job.json), in a session of its own; with
        ``node``, this machine's part of a multi-node job (its own log beside node 0's)."""
        from workers.launch import launch_command

        argv = [str(a) for a in launch_command(self.job_dir, node=node)]
        env = dict(os.environ)
        sinks = [s for s in env.get(names.SINKS, "").split(",") if s.strip()]
        if "workers.redis_sink:factory" not in sinks:
            sinks.append("workers.redis_sink:factory")
        env.update(
            {
                names.SINKS: ",".join(sinks),
                names.REDIS_URL: self.settings.redis_url,
                names.ARTIFACTS: str(self.settings.artifacts),
                "PYTHONUNBUFFERED": "1",
            }
        )
        log_name = LAUNCHER_LOG if node is None or node.node == 0 else node_launcher_log(node.node)
        with open(self.job_dir / log_name, "ab") as out:
            return subprocess.Popen(
                argv,
                cwd=self.job_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_launcher_preexec,
            )

    launcher_name = "launcher"  # (in the log: which launcher ended)

    def _supervise(
        self,
        proc: subprocess.Popen[bytes],
        beat: Callable[[], None],
        check: Callable[[], str],
        every_s: float,
    ) -> tuple[int | None, str]:
        """Watch the launcher until it exits or there is a reason to stop it: a cancel, this
        worker stopping, or what ``check()`` returns ('' for none; asked every ``every_s``).
        ``beat()`` runs at every poll (leases). The launcher is stopped then (TERM, KILL after the
        grace period; a longer one when the worker is shutting down). Returns (its exit code,
        the reason, '' when it exited by itself)."""
        reason = ""
        last_check = time.monotonic()
        while (code := proc.poll()) is None:
            time.sleep(POLL_S)
            try:
                beat()
                if self.store.cancel_requested(self.job_id):
                    reason = "cancel"
                elif self._stopping():
                    reason = "shutdown"
                elif time.monotonic() - last_check > every_s:
                    last_check = time.monotonic()
                    reason = check()
            except (OSError, redis.RedisError) as exc:  # Redis away for a moment: keep training
                log.warning("job %s: store unreachable while watching (%s)", self.job_id, exc)
                if self._worker_gone():
                    reason = "shutdown"
            if reason:
                grace = self.settings.kill_grace_s
                if reason == "shutdown":
                    grace = max(grace, self.settings.soft_shutdown_s / 2)
                code = stop_group(proc, grace)
                break
        if code is not None and not reason:
            stop_group(proc, 0.5)  # the launcher is gone; no rank may outlive it
        log.info(
            "job %s: %s exited with %s (%s)", self.job_id, self.launcher_name, code, reason or "by itself"
        )
        return code, reason

    def _superseded(self) -> str:
        """'superseded' once the job's record names another run than this one."""
        current = self.store.get_job(self.job_id)
        return "superseded" if current is None or current.run_id != self.run_id else ""

    def _watch(self, proc: subprocess.Popen[bytes]) -> str:
        code, reason = self._supervise(proc, self._renew, self._superseded, every_s=5.0)
        if reason == "cancel":
            self._finish("cancelled")
            return "cancelled"
        if reason == "superseded":
            return "superseded"
        if reason == "shutdown" or code == EXIT_INTERRUPTED:
            self._retry("recording the stop", self._sync_streams)
            self._retry("requeueing", lambda: self.store.requeue(self.job_id, self.run_id))
            self._release()
            if reason == "shutdown" and not self._worker_gone():
                self._wait_for_requeue(on_worker_gone=self._enqueue_again)
            self._enqueue_again()
            if self._worker_gone():
                os._exit(EXIT_INTERRUPTED)  # nothing left to report to
            return "requeued"
        if code == EXIT_OK:
            self._finish("succeeded")
            return "succeeded"
        self._finish("failed", error=_error_of(self.job_dir, int(code if code is not None else -1)))
        return "failed"

    def _sync_streams(self) -> None:
        """Store what the job directory holds and the streams lack (the sink may have been cut off)."""
        from workers.redis_sink import replay

        if self.job_dir.is_dir():
            replay(self.store, self.job_id, self.job_dir)

    def _release(self) -> None:
        with contextlib.suppress(OSError, redis.RedisError):
            self.store.release_lease(self.job_id, self.run_id)

    def _finish(self, status: str, error: str | None = None) -> None:
        """Record the final status (retrying until the store answers), streams complete first."""
        self._retry("recording the final records", self._sync_streams)

        def record_final() -> None:
            outcome = self.store.finish_run(self.job_id, self.run_id, status, error)
            if not outcome.ok:
                log.warning(
                    "job %s: not %s: it is %s under another run", self.job_id, status, outcome.previous
                )
            self.store.clear_cancel(self.job_id)

        self._retry(f"recording {status}", record_final)
        self._release()
        self._advance_experiment()

    def _advance_experiment(self) -> None:
        """A job of an experiment has finished: its slot goes to the experiment's next job at once
        (the heartbeat's sweep would give it within a beat; this is only sooner)."""
        from service.core.dispatch import advance
        from service.core.queue import make_celery

        with contextlib.suppress(OSError, redis.RedisError):
            record = self.store.get_job(self.job_id)
            if record is not None and record.experiment_id is not None:
                advance(self.store, make_celery(self.settings), record.experiment_id)


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self: Any, job_id: str) -> str:
    """Run the job ``job_id`` to its end (state in the store; the return value is only a log line)."""
    settings = load_settings()
    store = Store.from_url(settings.redis_url)
    instance = os.environ.get(names.WORKER_INSTANCE) or f"{self.request.hostname}-{os.getppid()}"
    return JobRunner(settings, store, job_id, str(self.request.hostname), instance).run()
