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
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import shared_task

from service.contract import load_spec
from service.procs import die_with_parent
from service.settings import Settings, load_settings
from service.store import Store
from workers.celery_app import RUN_JOB
from workers.train.program import EXIT_INTERRUPTED, EXIT_OK

__all__ = ["INSTANCE_ENV", "JobRunner", "run_job", "stop_process_group"]

log = logging.getLogger(__name__)

INSTANCE_ENV = "CHILDTUNE_WORKER_INSTANCE"
SINKS_ENV = "CHILDTUNE_SINKS"
POLL_S = 0.5


def _launcher_preexec() -> None:
    """In the launcher's process: default signal dispositions (Celery's pool children ignore
    SIGINT/SIGTERM and a child inherits that), and SIGTERM when the task's process dies."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    die_with_parent(signal.SIGTERM)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """Stop the launcher and every process of its group: SIGTERM, ``grace_s``, SIGKILL.

    Returns the launcher's exit code. On return no process of the group is left.
    """
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            break
        time.sleep(0.1)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    code = proc.wait()
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)
    return code


def _error_of(job_dir: Path, code: int) -> str:
    """The job's error: ``status.json``'s, else the launcher log's last line, else the exit code."""
    with contextlib.suppress(OSError, ValueError):
        status = json.loads((job_dir / "status.json").read_text())
        if isinstance(status, dict) and status.get("error"):
            return str(status["error"])
    with contextlib.suppress(OSError):
        lines = [x for x in (job_dir / "launcher.log").read_text(errors="replace").splitlines() if x.strip()]
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

    def _stopping(self) -> bool:
        if os.getppid() != self.parent_pid:
            return True
        try:
            return self.store.worker_stopping(self.instance)
        except (OSError, redis.RedisError):
            return False

    def _wait_for_requeue(self) -> None:
        """Hold the message unacknowledged until the worker's cold shutdown requeues it."""
        log.info("job %s: worker %s is stopping; the job goes back to the queue", self.job_id, self.hostname)
        deadline = time.monotonic() + self.settings.soft_shutdown_s + 120
        while time.monotonic() < deadline and os.getppid() == self.parent_pid:
            time.sleep(0.5)
        if os.getppid() != self.parent_pid:
            os._exit(EXIT_INTERRUPTED)  # the worker is gone: the broker redelivers after the timeout
        from celery.exceptions import Reject

        raise Reject("worker stopping", requeue=True)

    def run(self) -> str:
        record = self.store.get_job(self.job_id)
        if record is None:
            log.warning("job %s: no such job in the store; message dropped", self.job_id)
            return "missing"
        if self._stopping():
            self._wait_for_requeue()
        claim = self.store.transition(
            self.job_id,
            "running",
            allowed=("queued",),
            incr_attempts=True,
            run_id=self.run_id,
            worker=self.hostname,
            worker_instance=self.instance,
            started_at=record.started_at or time.time(),
            phase="preparing",
            error=None,
        )
        if not claim.ok:
            log.info("job %s is %s, not queued: message dropped", self.job_id, claim.previous)
            return f"skipped ({claim.previous})"
        try:
            proc = self._start(record.resolved_spec)
        except Exception as exc:
            self._finish("failed", error=f"could not start the training launcher: {exc}")
            return "failed"
        return self._watch(proc)

    def _start(self, resolved_spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        from workers.launch import launch_command

        spec = load_spec(resolved_spec)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.job_dir / "job.json.tmp"
        tmp.write_text(json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
        tmp.replace(self.job_dir / "job.json")
        argv = [
            str(a)
            for a in launch_command(self.job_dir, spec.resources.num_ranks, device=spec.resources.device)
        ]
        env = dict(os.environ)
        sinks = [s for s in env.get(SINKS_ENV, "").split(",") if s.strip()]
        if "workers.redis_sink:factory" not in sinks:
            sinks.append("workers.redis_sink:factory")
        env.update(
            {
                SINKS_ENV: ",".join(sinks),
                "CHILDTUNE_REDIS_URL": self.settings.redis_url,
                "CHILDTUNE_ARTIFACTS": str(self.settings.artifacts),
                "PYTHONUNBUFFERED": "1",
            }
        )
        with open(self.job_dir / "launcher.log", "ab") as out:
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

    def _watch(self, proc: subprocess.Popen[bytes]) -> str:
        reason = ""
        last_owner_check = time.monotonic()
        while (code := proc.poll()) is None:
            time.sleep(POLL_S)
            try:
                if self.store.cancel_requested(self.job_id):
                    reason = "cancel"
                elif self._stopping():
                    reason = "shutdown"
                elif time.monotonic() - last_owner_check > 5:
                    last_owner_check = time.monotonic()
                    current = self.store.get_job(self.job_id)
                    if current is None or current.run_id != self.run_id:
                        reason = "superseded"
            except (
                OSError,
                redis.RedisError,
            ) as exc:  # Redis away for a moment: keep training, look again later
                log.warning("job %s: store unreachable while watching (%s)", self.job_id, exc)
            if reason:
                grace = self.settings.kill_grace_s
                if reason == "shutdown":
                    grace = max(grace, self.settings.soft_shutdown_s / 2)
                code = stop_process_group(proc, grace)
                break
        if code is not None and not reason:
            stop_process_group(proc, 0.5)  # the launcher is gone; no rank may outlive it
        log.info("job %s: launcher exited with %s (%s)", self.job_id, code, reason or "by itself")
        if reason == "cancel":
            self._finish("cancelled")
            return "cancelled"
        if reason == "superseded":
            return "superseded"
        if reason == "shutdown" or code == EXIT_INTERRUPTED:
            self.store.transition(
                self.job_id,
                "queued",
                allowed=("running",),
                expect_run=self.run_id,
                worker=None,
                worker_instance=None,
                run_id=None,
            )
            if reason == "shutdown":
                self._wait_for_requeue()
            from workers.celery_app import enqueue, make_celery

            record = self.store.get_job(self.job_id)
            if record is not None:
                enqueue(make_celery(self.settings), self.job_id, record.queue)
            return "requeued"
        if code == EXIT_OK:
            self._finish("succeeded")
            return "succeeded"
        self._finish("failed", error=_error_of(self.job_dir, int(code if code is not None else -1)))
        return "failed"

    def _finish(self, status: str, error: str | None = None) -> None:
        fields: dict[str, Any] = {"finished_at": time.time(), "error": error}
        if status == "succeeded":
            record = self.store.get_job(self.job_id)
            if record is not None and record.total_steps:
                fields["step"] = record.total_steps
        self.store.transition(self.job_id, status, allowed=("running",), expect_run=self.run_id, **fields)
        with contextlib.suppress(OSError, redis.RedisError):
            self.store.clear_cancel(self.job_id)


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self: Any, job_id: str) -> str:
    """Run the job ``job_id`` to its end (state in the store; the return value is only a log line)."""
    settings = load_settings()
    store = Store.from_url(settings.redis_url)
    instance = os.environ.get(INSTANCE_ENV) or f"{self.request.hostname}-{os.getppid()}"
    return JobRunner(settings, store, job_id, str(self.request.hostname), instance).run()
