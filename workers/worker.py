"""``childtune worker``: a Celery worker that runs jobs, one at a time.

    childtune worker [--queues gpu-x1,gpu-x2] [--concurrency 1] [--hostname NAME] [--loglevel info]
    childtune worker --check [--hostname NAME]     # healthcheck: 0 when this worker's heartbeat is fresh

The worker's main process keeps a heartbeat in the store (``readyz`` counts live workers; the
reaper requeues the jobs of silent ones) and runs the reaper. SIGTERM is remapped to a cold
shutdown with a soft wait (``REMAP_SIGTERM=SIGQUIT``, ``CHILDTUNE_SOFT_SHUTDOWN_S``): the first
SIGTERM/SIGINT/SIGQUIT raises the worker's stop flag in the store; the running task then stops
its launcher (the training program exits at a safe point) and the job's message goes back to the
queue for the next worker, which resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from types import FrameType
from typing import Any

from service.core import env
from service.core.settings import SettingsError, load_settings
from service.core.store import Store

__all__ = ["default_hostname", "main"]

log = logging.getLogger("childtune.worker")


def default_hostname() -> str:
    return f"childtune@{socket.gethostname()}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="childtune worker", description="Run a Celery worker for childtune jobs."
    )
    p.add_argument("--queues", "-Q", help="comma-separated queues (default: $CHILDTUNE_QUEUES, else all)")
    p.add_argument(
        "--concurrency", "-c", type=int, default=1, help="jobs at a time (default 1: one per GPU set)"
    )
    p.add_argument("--hostname", "-n", default=None, help="worker name (default childtune@<host>)")
    p.add_argument("--loglevel", "-l", default="info")
    p.add_argument(
        "--check", action="store_true", help="exit 0 when this worker's heartbeat is fresh in Redis, else 1"
    )
    return p


class _Heartbeat(threading.Thread):
    """Heartbeats, the stop flag and the reaper, from the worker's main process."""

    def __init__(self, store: Store, instance: str, hostname: str, queues: list[str], settings: Any) -> None:
        super().__init__(name="childtune-heartbeat", daemon=True)
        self.store, self.instance, self.hostname, self.queues = store, instance, hostname, queues
        self.settings = settings
        self.stopping = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        from service.core.dispatch import send_job, sweep
        from service.core.queue import make_celery
        from service.core.webhooks.delivery import DeliveryLoop
        from workers.gang import assign_gangs, release_stale_gangs
        from workers.reaper import Reaper

        # Webhook deliveries in a thread of their own: a slow receiver never delays a heartbeat.
        DeliveryLoop(Store.from_url(self.settings.redis_url), self.settings, self.stopping).start()
        app = make_celery(self.settings)
        reaper = Reaper(
            self.store, self.settings, lambda job_id, queue: send_job(self.store, app, job_id, queue)
        )
        settings, flagged = self.settings, False
        addr, gpus = settings.node_address, gpu_count()
        while not self.done.is_set():
            try:
                self.store.heartbeat(
                    self.instance, self.hostname, self.queues, settings.heartbeat_ttl_s, addr=addr, gpus=gpus
                )
                if self.stopping.is_set() and not flagged:
                    self.store.request_worker_stop(self.instance)
                    # Out of the idle sets: no gang may pick a worker that is going away.
                    self.store.worker_busy(self.instance, self.queues, "(stopping)")
                    flagged = True
                if not self.stopping.is_set():
                    # Free for a gang when no job of this worker was renewed for a while.
                    self.store.worker_idle(self.instance, self.queues, busy_ttl_s=settings.heartbeat_ttl_s)
                    reaper()
                    if self.store.try_lock("dispatch", settings.heartbeat_interval_s):
                        sweep(self.store, app)
                        release_stale_gangs(self.store, settings)
                    assign_gangs(self.store, app, settings, self.queues)
            except Exception as exc:  # keep beating through a Redis restart
                log.warning("heartbeat: %s", exc)
            if self.stopping.is_set():
                self.done.wait(1.0)
            else:  # wakes at once when a stop signal arrives, so the stop flag is set without delay
                self.stopping.wait(self.settings.heartbeat_interval_s)


def gpu_count() -> int:
    """The GPUs this worker sees (NVIDIA's driver folders, narrowed by CUDA_VISIBLE_DEVICES),
    without importing torch: what its heartbeat advertises."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        found = 0
    if visible is not None:
        found = min(found, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return found


def _chain_stop_signals(beat: _Heartbeat) -> None:
    """Set the stop flag first on SIGTERM/SIGINT/SIGQUIT, then let Celery's handler run."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            beat.stopping.set()
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def _check(hostname: str) -> int:
    try:
        settings = load_settings()
        store = Store.from_url(settings.redis_url, timeout_s=3)
        alive = store.host_alive(hostname)
    except Exception as exc:
        print(f"worker {hostname}: cannot read its heartbeat: {exc}", file=sys.stderr)
        return 1
    print(f"worker {hostname}: {'alive' if alive else 'no fresh heartbeat'}")
    return 0 if alive else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    hostname = args.hostname or default_hostname()
    if args.check:
        return _check(hostname)
    if args.concurrency < 1:
        print("childtune worker: --concurrency must be >= 1", file=sys.stderr)
        return 2
    # Before Celery (billiard) is imported: SIGTERM starts the cold shutdown with a soft wait.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    if args.queues:
        os.environ[env.QUEUES] = args.queues
    if args.concurrency > 1 and not os.environ.get(env.CPU_THREADS, "").strip():
        # N jobs at once share the cores: each CPU job gets cores // N threads (split over its ranks).
        os.environ[env.CPU_THREADS] = str(max(1, (os.cpu_count() or 1) // args.concurrency))
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"childtune worker: {exc}", file=sys.stderr)
        return 2
    instance = f"{hostname}/{uuid.uuid4().hex[:12]}"
    os.environ[env.WORKER_INSTANCE] = instance
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from celery import signals

    import workers.gang  # (registers run_node)
    import workers.tasks  # noqa: F401  (registers run_job)
    from service.core.queue import make_celery, node_queue

    app = make_celery(settings)
    store = Store.from_url(settings.redis_url)
    beat = _Heartbeat(store, instance, hostname, settings.queue_list, settings)

    @signals.worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        _chain_stop_signals(beat)
        beat.start()
        log.info("worker %s ready on queues %s", hostname, settings.queues)

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        beat.done.set()
        beat.stopping.set()
        try:
            store.drop_worker(instance, hostname)
        except Exception as exc:
            log.warning("could not remove the heartbeat of %s: %s", instance, exc)

    worker_argv = [
        "worker",
        "--queues",
        f"{settings.queues},{node_queue(instance)}",  # (the second: nodes of gangs that reserved it)
        "--concurrency",
        str(args.concurrency),
        "--pool",
        "prefork",
        "--hostname",
        hostname,
        "--loglevel",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv=worker_argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
