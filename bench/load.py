"""The REST API under load: many clients polling a running job, and a burst of submits.

Run: ``python -m bench.load [--duration 60] [--clients 200] [--api-workers 1] [--out FILE]``.
Not a test. ``--api-workers N`` serves the API from N processes (``childtune api --workers N``);
its CPU is then the sum of them.

It starts a real stack on loopback, as ``tests/e2e/stack.py`` does: ``redis-server``, the API
(``python -m service.cli api``, one uvicorn process) and one Celery worker (``DS_ACCELERATOR=cpu``).
Then:

1. It submits one training job (a tiny random BERT from ``tests/workers/tiny.py``, kept under the
   folder named by ``CHILDTUNE_MODEL_ROOTS`` and given by its absolute path; ``glue/rte``, cpu,
   1 rank, enough ``max_steps`` to outlast the run) and waits until it trains.
2. Submit latency: ``--submit-rounds`` bursts of ``--submits`` concurrent ``POST /v1/jobs`` (small
   valid specs: ``minilm-l6``, ``glue/rte``, cpu, 1 rank; they only queue behind the training job
   and are cancelled after each burst).
3. Polling load: ``--clients`` concurrent clients for ``--duration`` seconds, each in a loop
   ``GET /v1/jobs/{id}`` then ``GET /v1/jobs/{id}/metrics?after=<cursor>`` (passing
   ``next_cursor`` back), with ``--interval`` seconds between iterations (0: closed loop, each
   client sends its next request as soon as the last one answered).

Every request's latency (from just before the request is sent until its body is read) and status
are kept; an error is a non-2xx answer or an exception. The report (printed, and written as JSON to
``--out``) has per endpoint and overall: requests, throughput, p50/p90/p99/max latency, errors; the
API's own mean for the same requests (its Prometheus histogram, timed from the app's outermost
middleware: the client's latency minus it was spent before the app, in the socket backlog, the
event loop and HTTP parsing); how the CPU was shared during the load (API, Redis, this load
generator, the rest: the worker, the training ranks and anything else on the machine) and the
API's CPU time per request; for submits, the API's CPU time per submit. Finally the job is
cancelled and the stack stopped; the run fails if any process of the stack is left behind.

The clients speak HTTP/1.1 over plain asyncio streams (:class:`Connection`), loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.cli.local_stack import RedisServer

# The e2e helpers start the real programs as the tests do. Imported by name at run time: mypy
# would otherwise follow them into tests/workers/tiny.py, which is not part of `mypy bench`.
_stack: Any = importlib.import_module("tests.e2e.stack")
KEYS: dict[str, str] = _stack.KEYS
HEADERS = {"Authorization": f"Bearer {KEYS['alice']}"}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Sample:
    endpoint: str
    latency_s: float
    status: int  # 0: the request raised
    error: str | None = None


# ------------------------------------------------------------------------------------ statistics


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    latencies = sorted(s.latency_s for s in samples)
    errors = [s for s in samples if not 200 <= s.status < 300]
    return {
        "requests": len(samples),
        "throughput_rps": round(len(samples) / wall_s, 1) if wall_s > 0 else None,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 2) if latencies else None,
        "errors": len(errors),
        "error_kinds": dict(Counter(s.error or f"HTTP {s.status}" for s in errors)),
    }


def by_endpoint(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.endpoint].append(s)
    out = {name: summarise(group, wall_s) for name, group in sorted(groups.items())}
    out["overall"] = summarise(samples, wall_s)
    return out


# ------------------------------------------------------------------- the API's own measurements

_SERIES = re.compile(r"^childtune_http_request_duration_seconds_(sum|count)\{(.*)\} (\S+)$")


def server_histogram(url: str) -> dict[tuple[str, str], list[float]]:
    """(method, route) -> [count, sum of seconds] from the API's Prometheus histogram."""
    text = httpx.get(url + "/metrics", timeout=30).text
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for line in text.splitlines():
        match = _SERIES.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            slot = 0 if match.group(1) == "count" else 1
            out[(labels["method"], labels["route"])][slot] += float(match.group(3))
    return out


def server_delta(
    before: dict[tuple[str, str], list[float]], after: dict[tuple[str, str], list[float]]
) -> dict[str, Any]:
    out = {}
    for key, (count, total) in sorted(after.items()):
        count0, total0 = before.get(key, [0.0, 0.0])
        n = count - count0
        if n > 0:
            out[f"{key[0]} {key[1]}"] = {"requests": int(n), "mean_ms": round((total - total0) / n * 1000, 2)}
    return out


# --------------------------------------------------------------------------------- CPU accounting


def _proc_cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds of ``pid``, with ``children`` and of its live children too (the API's worker
    processes, with ``--api-workers`` above 1; their own children are not counted)."""
    total = 0.0
    for one in [pid, *(_children(pid) if children else [])]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return total


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # the parent's pid
                found.append(int(entry.name))
    return found


def _machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    busy = user + nice + system + irq + softirq
    return busy / TICKS, (busy + idle + iowait + steal) / TICKS


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: _proc_cpu_s(pid, children=name == "api") for name, pid in pids.items()}
    snap["_busy"], snap["_total"] = _machine_cpu_s()
    return snap


def cpu_usage(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, Any]:
    """Cores used on average by each process and by everything else, over ``wall_s``."""
    used = {k: (after[k] - before[k]) / wall_s for k in before if not k.startswith("_")}
    busy = (after["_busy"] - before["_busy"]) / wall_s
    out: dict[str, Any] = {f"{k}_cores": round(v, 2) for k, v in used.items()}
    out["rest_cores (worker, training ranks, other work)"] = round(busy - sum(used.values()), 2)
    out["machine_busy_cores"] = round(busy, 2)
    out["machine_cores"] = os.cpu_count()
    return out


# ------------------------------------------------------------------------------------ the phases


def training_spec(model: Path, max_steps: int) -> dict[str, Any]:
    return {
        "model": str(model),
        "dataset": {"preset": "glue/rte", "max_train_examples": 256, "max_eval_examples": 16},
        "childtuning": {"mode": "vanilla"},
        "hyperparameters": {
            "max_steps": max_steps,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_seq_length": 32,
            "eval_every": max_steps,
            "save_every": max_steps,
            "seed": 3,
        },
        "resources": {"num_ranks": 1, "zero_stage": 2, "device": "cpu"},
        "metadata": {"source": "bench.load"},
    }


SMALL_SPEC: dict[str, Any] = {
    "model": "minilm-l6",
    "dataset": {"preset": "glue/rte"},
    "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
    "hyperparameters": {"max_steps": 10},
    "resources": {"num_ranks": 1, "device": "cpu"},
    "metadata": {"source": "bench.load submit"},
}


class Connection:
    """One keep-alive HTTP/1.1 connection: a minimal client, so that the load generator, which
    shares the machine's cores with the API, takes little CPU from it (about 0.1 ms per request;
    httpx took 1.0 ms with one client per connection and 5.7 ms with one pool of 200 connections,
    whose bookkeeping grows with the pool)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        auth = HEADERS["Authorization"]
        self.head = f"Host: {host}:{port}\r\nAuthorization: {auth}\r\nAccept: application/json\r\n"

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._exchange(method, path, body), self.timeout)
        except BaseException:
            await self.close()  # a half-read answer leaves the connection unusable
            raise

    async def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, close = None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not supported by this load generator")
        data = await self.reader.readexactly(length or 0)
        if close:
            await self.close()
        return status, data


class Recorder:
    """Every request's endpoint, latency and status."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    async def call(self, conn: Connection, endpoint: str, method: str, path: str, body: bytes = b"") -> Any:
        """The answer's JSON when it is 2xx, else None; the sample is recorded either way."""
        start = time.perf_counter()
        try:
            status, data = await conn.request(method, path, body)
        except Exception as exc:  # every failure counts, whatever it is
            self.samples.append(Sample(endpoint, time.perf_counter() - start, 0, type(exc).__name__))
            return None
        self.samples.append(Sample(endpoint, time.perf_counter() - start, status))
        return json.loads(data) if 200 <= status < 300 else None


def _address(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    if parsed.host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"{url}: the load generator talks to loopback only")
    return parsed.host, parsed.port or 80


async def submit_burst(url: str, n: int) -> tuple[list[Sample], list[str], float]:
    """``n`` concurrent POST /v1/jobs, each on its own connection opened beforehand."""
    host, port = _address(url)
    recorder = Recorder()
    conns = [Connection(host, port, 60) for _ in range(n)]
    body = json.dumps(SMALL_SPEC).encode()
    try:
        await asyncio.gather(*(c.open() for c in conns))
        start = time.perf_counter()
        answers = await asyncio.gather(
            *(recorder.call(c, "POST /v1/jobs", "POST", "/v1/jobs", body) for c in conns)
        )
        wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return recorder.samples, [a["id"] for a in answers if a is not None], wall


@dataclass
class LoadResult:
    samples: list[Sample]
    wall_s: float
    cpu: dict[str, Any]


async def poll_load(
    url: str,
    job_id: str,
    clients: int,
    duration: float,
    interval: float,
    max_requests: int,
    pids: dict[str, int],
) -> LoadResult:
    """``clients`` concurrent pollers of one job for ``duration`` seconds (at most ``max_requests``)."""
    host, port = _address(url)
    recorder = Recorder()
    budget = [max_requests]
    conns = [Connection(host, port, 30) for _ in range(clients)]

    async def one(conn: Connection, deadline: float, offset: float) -> None:
        cursor = "0"
        await asyncio.sleep(offset)  # independent clients: not all in step
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 2
            await recorder.call(conn, "GET /v1/jobs/{id}", "GET", f"/v1/jobs/{job_id}")
            page = await recorder.call(
                conn, "GET /v1/jobs/{id}/metrics", "GET", f"/v1/jobs/{job_id}/metrics?after={cursor}"
            )
            if page is not None:
                cursor = page["next_cursor"]
            if interval > 0:
                await asyncio.sleep(interval)

    try:
        await asyncio.gather(*(c.open() for c in conns))
        cpu0 = cpu_snapshot(pids)
        start = time.perf_counter()
        jitter = random.Random(0)
        await asyncio.gather(*(one(c, start + duration, jitter.uniform(0, interval)) for c in conns))
        wall = time.perf_counter() - start
        cpu = cpu_usage(cpu0, cpu_snapshot(pids), wall)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return LoadResult(recorder.samples, wall, cpu)


def cancel_all(http: httpx.Client, ids: Iterable[str]) -> None:
    for job_id in ids:
        answer = http.post(f"/v1/jobs/{job_id}/cancel")
        if answer.status_code not in (200, 409):
            raise RuntimeError(f"cancel {job_id}: HTTP {answer.status_code} {answer.text[:200]}")


def leftovers(artifacts: Path) -> list[str]:
    """Processes (other than this one) that run with this stack's environment or folders."""
    marker = f"CHILDTUNE_ARTIFACTS={artifacts}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (marker in env or str(artifacts.parent).encode() in cmd):
            line = cmd.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {line[:120]}")
    return found


def _print_table(title: str, rows: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(
        f"  {'endpoint':<28} {'requests':>9} {'req/s':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} errors"
    )
    for name, s in rows.items():
        print(
            f"  {name:<28} {s['requests']:>9} {s['throughput_rps'] or 0:>8.1f} {s['p50_ms']:>8.1f} "
            f"{s['p90_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms'] or 0:>8.1f} {s['errors']}"
        )


def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    models = base / "models"
    artifacts = base / "artifacts"
    model = _stack.write_tiny_model(models / "tiny-bert").resolve()
    server = RedisServer(base / "redis")
    server.start()
    env = _stack.service_env(
        server.url,
        artifacts,
        CHILDTUNE_MODEL_ROOTS=str(models.resolve()),
        DS_ACCELERATOR="cpu",
        CHILDTUNE_API_WORKERS=str(args.api_workers),
    )
    api = worker = None
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }
    try:
        api, url = _stack.start_api(env, base / "api.log")
        worker = _stack.start_worker(env, base / "worker.log", "bench@load", url)
        pids = {"api": api.pid, "redis": server.proc.pid if server.proc else 0, "loadgen": os.getpid()}
        with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as http:
            max_steps = 10**6
            answer = http.post("/v1/jobs", json=training_spec(model, max_steps))
            if answer.status_code != 201:
                raise RuntimeError(f"submit: HTTP {answer.status_code} {answer.text[:500]}")
            job_id = answer.json()["id"]
            report["job"] = job_id

            def training() -> bool:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("failed", "cancelled", "succeeded"):
                    raise RuntimeError(f"the training job ended: {job['status']} {job.get('error')}")
                return bool(job["status"] == "running" and job["progress"]["step"] >= 1)

            _stack.wait_for(training, args.start_timeout, "the training job to run its first step")
            print(f"stack up at {url}; job {job_id} is training", flush=True)

            rounds = []
            all_submits: list[Sample] = []
            submit_cpu_s = 0.0
            for i in range(args.submit_rounds if args.submits else 0):
                cpu_before = _proc_cpu_s(api.pid, children=True)
                samples, ids, wall = asyncio.run(submit_burst(url, args.submits))
                submit_cpu_s += _proc_cpu_s(api.pid, children=True) - cpu_before
                cancel_all(http, ids)
                all_submits += samples
                summary = summarise(samples, wall)
                summary["wall_s"] = round(wall, 3)
                rounds.append(summary)
                print(
                    f"submit burst {i + 1}: {args.submits} concurrent, p50 {summary['p50_ms']:.1f} ms, "
                    f"p99 {summary['p99_ms']:.1f} ms, errors {summary['errors']}",
                    flush=True,
                )
            if rounds:
                report["submit"] = {
                    "concurrent": args.submits,
                    "rounds": rounds,
                    "all": summarise(all_submits, sum(r["wall_s"] for r in rounds)),
                    "api_cpu_ms_per_submit": round(submit_cpu_s / max(len(all_submits), 1) * 1000, 2),
                }

            if args.clients > 0 and args.duration > 0:
                hist0 = server_histogram(url)
                result = asyncio.run(
                    poll_load(
                        url, job_id, args.clients, args.duration, args.interval, args.max_requests, pids
                    )
                )
                hist1 = server_histogram(url)
                samples, wall = result.samples, result.wall_s
                steps = http.get(f"/v1/jobs/{job_id}").json()["progress"]["step"]
                report["load"] = {
                    "clients": args.clients,
                    "interval_s": args.interval,
                    "wall_s": round(wall, 2),
                    "endpoints": by_endpoint(samples, wall),
                    "server_side": server_delta(hist0, hist1),
                    "cpu": result.cpu,
                    "api_cpu_ms_per_request": round(
                        result.cpu["api_cores"] / max(len(samples), 1) * wall * 1000, 2
                    ),
                    "training_step_at_end": steps,
                }
                if args.interval == 0:
                    # A closed loop keeps `clients` requests in flight: mean latency = clients / rate.
                    report["load"]["little_mean_ms"] = round(
                        args.clients / max(len(samples), 1) * wall * 1000, 1
                    )
                _print_table(
                    f"{args.clients} clients, {wall:.1f} s, interval {args.interval} s (latency in ms)",
                    report["load"]["endpoints"],
                )
                print("  API's own mean (inside the app):", json.dumps(report["load"]["server_side"]))
                print("  CPU:", json.dumps(report["load"]["cpu"]))
                print(f"  API CPU per request: {report['load']['api_cpu_ms_per_request']} ms")

            cancel_all(http, [job_id])
            _stack.wait_for(
                lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled", 60, "the cancel"
            )
    finally:
        if worker is not None:
            _stack.stop(worker)
        if api is not None:
            _stack.stop(api)
        server.stop()
    deadline = time.monotonic() + 15
    while (left := leftovers(artifacts)) and time.monotonic() < deadline:
        time.sleep(0.5)
    report["processes_left"] = left
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of polling load (60)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent polling clients (200)")
    ap.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "childtune-load.json", help="JSON report"
    )
    ap.add_argument("--interval", type=float, default=0.0, help="seconds each client waits between polls (0)")
    ap.add_argument(
        "--submits", type=int, default=40, help="concurrent POST /v1/jobs per burst (40; 0: none)"
    )
    ap.add_argument("--submit-rounds", type=int, default=3, help="bursts of --submits (3)")
    ap.add_argument("--max-requests", type=int, default=5_000_000, help="cap on polling requests in all")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the job to train")
    ap.add_argument("--api-workers", type=int, default=1, help="API processes behind its port (1)")
    ap.add_argument("--keep", action="store_true", help="keep the state folder (logs) and print it")
    args = ap.parse_args(argv)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwind: the stack's processes are stopped on the way out

    signal.signal(signal.SIGTERM, on_term)
    base = Path(tempfile.mkdtemp(prefix="childtune-load-"))
    try:
        report = run(args, base)
    finally:
        if args.keep:
            print(f"state and logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport written to {args.out}")
    if report["processes_left"]:
        print("processes left behind:\n  " + "\n  ".join(report["processes_left"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
