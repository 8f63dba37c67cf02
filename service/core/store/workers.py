"""Workers' heartbeats and stop requests, named locks, and the depth of the Celery queues."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

from service.core.store.base import P, StoreBase


class WorkerStore(StoreBase):
    """``ct:workers``, ``ct:worker:<instance>``, ``ct:worker-host:<hostname>``,
    ``ct:worker-stop:<instance>``, ``ct:lock:<name>`` and kombu's queue lists."""

    def heartbeat(
        self, instance: str, hostname: str, queues: list[str], ttl_s: float, *, addr: str = "", gpus: int = 0
    ) -> None:
        """The worker is alive; it serves ``queues``, other nodes reach it at ``addr`` and it has
        ``gpus`` GPUs (what a multi-node job's record shows of its machines)."""
        now = time.time()
        ttl_ms = max(1, int(ttl_s * 1000))
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(P + "workers", {instance: now})
        pipe.hset(
            P + f"worker:{instance}",
            mapping={
                "hostname": hostname,
                "queues": ",".join(queues),
                "beat": str(now),
                "addr": addr,
                "gpus": str(gpus),
            },
        )
        pipe.pexpire(P + f"worker:{instance}", ttl_ms * 10)
        pipe.set(P + f"worker-host:{hostname}", instance, px=ttl_ms)
        pipe.execute()

    def drop_worker(self, instance: str, hostname: str) -> None:
        """The worker has shut down: out of the idle sets, its own (node) queue gone."""
        from service.core.queue import node_queue

        queues = cast(str | None, self.r.hget(P + f"worker:{instance}", "queues")) or ""
        pipe = self.r.pipeline(transaction=True)
        for queue in filter(None, queues.split(",")):
            pipe.zrem(P + f"idle:{queue}", instance)
        pipe.delete(node_queue(instance), P + f"busy:{instance}")
        pipe.zrem(P + "workers", instance)
        pipe.delete(P + f"worker:{instance}", P + f"worker-stop:{instance}")
        pipe.delete(P + f"worker-host:{hostname}")
        pipe.execute()

    def worker_info(self, instance: str) -> dict[str, str]:
        """What the worker's last heartbeat said: hostname, queues, beat, addr, gpus."""
        return cast(dict[str, str], self.r.hgetall(P + f"worker:{instance}"))

    def workers_alive(self, ttl_s: float) -> list[str]:
        """Worker instances whose last heartbeat is younger than ``ttl_s``."""
        now = time.time()
        self.r.zremrangebyscore(P + "workers", "-inf", now - 100 * ttl_s)  # long gone: forget them
        return cast(list[str], self.r.zrangebyscore(P + "workers", now - ttl_s, "+inf"))

    def worker_alive(self, instance: str, ttl_s: float) -> bool:
        beat = self.r.zscore(P + "workers", instance)
        return beat is not None and time.time() - float(cast(float, beat)) < ttl_s

    def host_alive(self, hostname: str) -> bool:
        return bool(self.r.exists(P + f"worker-host:{hostname}"))

    def request_worker_stop(self, instance: str) -> None:
        self.r.set(P + f"worker-stop:{instance}", "1", ex=3600)

    def worker_stopping(self, instance: str) -> bool:
        return bool(self.r.exists(P + f"worker-stop:{instance}"))

    def try_lock(self, name: str, ttl_s: float) -> bool:
        return bool(self.r.set(P + f"lock:{name}", "1", nx=True, px=max(1, int(ttl_s * 1000))))

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in each Celery queue (kombu's Redis transport: a list per priority)."""
        queues = list(queues)
        pipe = self.r.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
            for priority in (3, 6, 9):
                pipe.llen(f"{queue}\x06\x16{priority}")
        counts = [int(n) for n in pipe.execute()]
        return {q: sum(counts[4 * i : 4 * i + 4]) for i, q in enumerate(queues)}
