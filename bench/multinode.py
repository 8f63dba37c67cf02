"""Jobs across machines on CPU loopback (issue 24): what spreading a job over nodes costs.

    python -m bench.multinode [--repeats 3] [--steps 30] [--out docs/results/multinode.json]

Two measurements, each repeated and interleaved (one of each kind in turn, so a slower minute
of a busy machine hits every kind alike), reported as medians:

1. **Throughput.** The same ChildTuning-D job (the ``minilm-l6`` preset on RTE, ZeRO-2, fp32)
   as 1 node x 2 ranks (``python -m workers.launch``: the one-machine launcher), as 1 node x 2
   ranks under torchrun (``--nnodes 1``: what one launch path for every job would run) and as
   2 nodes x 1 rank (two ``workers.launch --nnodes 2`` supervisors, torchrun's c10d rendezvous
   on 127.0.0.1); also the time from the launch to the first train record. Samples/s is the
   median of the job's own train records after the first ``--skip`` steps. On one machine the
   two nodes share its cores exactly as the two ranks do, so the ratio isolates what torchrun
   and a TCP-only process group (DeepSpeed's shared-memory all-reduce needs every rank on one
   host) cost.
2. **The gang's overhead.** Through the service (Redis, the API, two ``childtune worker``
   processes acting as nodes, one shared artifacts folder): the time from ``POST /v1/jobs`` to
   the job's first train record, for a tiny 1-node x 1-rank job and for its 2-node x 1-rank twin.
   The difference is what gang assignment (heartbeats), joining, the shared-folder check and the
   rendezvous add to a start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from service.core.contract import load_spec
from service.core.env import CPU_THREADS
from service.core.jobdir import read_jsonl
from service.core.procs import rendezvous_port

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FINAL = ("succeeded", "failed", "cancelled")


def job_spec(model: str, steps: int, *, nodes: int, ranks: int, examples: int = 256) -> dict[str, Any]:
    return {
        "model": model,
        "dataset": {"preset": "glue/rte", "max_train_examples": examples, "max_eval_examples": 16},
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {
            "max_steps": steps, "batch_size": 8, "learning_rate": 2e-5, "max_seq_length": 128,
            "eval_every": steps, "save_every": steps, "seed": 1,
        },
        "resources": {"nodes": nodes, "num_ranks": ranks, "zero_stage": 2, "device": "cpu"},
    }  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    if DATA.is_dir():
        env.setdefault("CHILDTUNE_DATA", str(DATA))
    return env


def _write_job(job_dir: Path, spec: dict[str, Any]) -> None:
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps(load_spec(spec).model_dump(mode="json")))


def samples_per_s(job_dir: Path, skip: int) -> float:
    train = [r for r in read_jsonl(job_dir / "metrics.jsonl") if r.get("kind") == "train"][skip:]
    if not train:
        raise SystemExit(f"{job_dir}: no training steps after the first {skip}; see its launcher.log")
    return float(statistics.median(r["samples_per_second"] for r in train))


def run_one_node(job_dir: Path) -> int:
    with open(job_dir.parent / f"{job_dir.name}.log", "wb") as log:
        return subprocess.run(
            [sys.executable, "-m", "workers.launch", "--job-dir", str(job_dir)],
            env=_env(),
            stdout=log,
            stderr=log,
        ).returncode


def run_two_nodes(job_dir: Path) -> int:
    """Two nodes on this one machine: each gets half of its cores as its thread budget (a real
    node has its own; without this both would run a thread per core, twice the cores)."""
    endpoint = f"127.0.0.1:{rendezvous_port()}"
    env = {**_env(), CPU_THREADS: str(max(1, (os.cpu_count() or 2) // 2))}
    procs = []
    for node in (0, 1):
        argv = [
            sys.executable, "-m", "workers.launch", "--job-dir", str(job_dir), "--nnodes", "2",
            "--node", str(node), "--rdzv-endpoint", endpoint, "--rdzv-id", job_dir.name,
            "--local-addr", "127.0.0.1",
        ]  # fmt: skip
        log = open(job_dir.parent / f"{job_dir.name}.node{node}.log", "wb")  # noqa: SIM115
        procs.append((subprocess.Popen(argv, env=env, stdout=log, stderr=log), log))
    codes = []
    for proc, log in procs:
        codes.append(proc.wait())
        log.close()
    return max(codes)


def run_torchrun_one_node(job_dir: Path) -> int:
    """One machine's job under torchrun (what a single launch path would run), for comparison."""
    endpoint = f"127.0.0.1:{rendezvous_port()}"
    argv = [
        sys.executable, "-m", "workers.launch", "--job-dir", str(job_dir), "--nnodes", "1",
        "--node", "0", "--rdzv-endpoint", endpoint, "--rdzv-id", job_dir.name, "--local-addr", "127.0.0.1",
    ]  # fmt: skip
    with open(job_dir.parent / f"{job_dir.name}.log", "wb") as log:
        return subprocess.run(argv, env=_env(), stdout=log, stderr=log).returncode


KINDS = {
    "1x2": (1, run_one_node),  # the one-machine launcher (RankGroup)
    "1x2 torchrun": (1, run_torchrun_one_node),
    "2x1": (2, run_two_nodes),
}


def throughput(base: Path, repeats: int, steps: int, skip: int) -> dict[str, Any]:
    rows: dict[str, list[float]] = {kind: [] for kind in KINDS}
    starts: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for i in range(repeats):
        for kind, (nodes, run) in KINDS.items():
            job_dir = base / f"{kind.replace(' ', '-')}-{i}"
            _write_job(job_dir, job_spec("minilm-l6", steps, nodes=nodes, ranks=2))
            launched = time.time()
            code = run(job_dir)
            if code != 0:
                raise SystemExit(f"{job_dir}: exit {code}; see {job_dir.parent}/{job_dir.name}*.log")
            rows[kind].append(samples_per_s(job_dir, skip))
            first = next(r for r in read_jsonl(job_dir / "metrics.jsonl") if r.get("kind") == "train")
            starts[kind].append(float(first["time"]) - launched)
            print(
                f"throughput {kind} run {i + 1}: {rows[kind][-1]:.2f} samples/s, "
                f"first step {starts[kind][-1]:.1f} s after launch",
                flush=True,
            )
    medians = {kind: statistics.median(v) for kind, v in rows.items()}
    return {
        "runs": rows,
        "launch_to_first_step_s": starts,
        "median_samples_per_s": medians,
        "median_launch_to_first_step_s": {kind: statistics.median(v) for kind, v in starts.items()},
        "ratio_2x1_over_1x2": medians["2x1"] / medians["1x2"],
        "ratio_torchrun_over_rankgroup": medians["1x2 torchrun"] / medians["1x2"],
    }


def gang_overhead(base: Path, repeats: int) -> dict[str, Any]:
    # The tests' stack: Redis, the API and workers acting as nodes, each with its own scratch.
    from tests.e2e.stack import wait_for
    from tests.e2e.test_faults import fault_stack
    from tests.e2e.test_multinode import add_node

    # Two "machines" on this one: each worker's jobs get half of its cores. They share this
    # process's temporary folder (torch's compile caches are there, warm as on a used machine;
    # a fresh folder per node makes every first job compile: 31 s to its first step, not 8 s).
    extra = {CPU_THREADS: str(max(1, (os.cpu_count() or 2) // 2)), "TMPDIR": tempfile.gettempdir()}
    rows: dict[str, list[float]] = {"1 node": [], "2 nodes": []}
    with fault_stack(base, first_worker=False) as stack:
        for name in ("node-a", "node-b"):
            add_node(stack, name, **extra)
        client = stack.client
        for i in range(repeats):
            for kind, nodes in (("1 node", 1), ("2 nodes", 2)):
                spec = job_spec(str(stack.model), 4, nodes=nodes, ranks=nodes, examples=32)
                spec["hyperparameters"]["max_seq_length"] = 32
                sent = time.monotonic()
                job_id = client.submit(spec)["id"]

                def first_step(job_id: str = job_id) -> bool:
                    return any(r["kind"] == "train" for r in client.all_records(job_id, "metrics"))

                wait_for(first_step, 300, f"the first step of {job_id}", interval=0.05)
                rows[kind].append(time.monotonic() - sent)
                wait_for(
                    lambda job_id=job_id: client.get_job(job_id)["status"] in FINAL, 300, "the job's end"
                )
                print(f"submit to first step, {kind}, run {i + 1}: {rows[kind][-1]:.2f} s", flush=True)
    one, two = statistics.median(rows["1 node"]), statistics.median(rows["2 nodes"])
    return {"runs": rows, "median_1_node_s": one, "median_2_nodes_s": two, "overhead_s": two - one}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.multinode", description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=5, help="train records left out (warm-up)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    ap.add_argument("--only", choices=("throughput", "gang"), default=None)
    a = ap.parse_args(argv)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "repeats": a.repeats,
    }
    with tempfile.TemporaryDirectory(prefix="childtune-multinode-") as tmp:
        base = Path(tmp)
        if a.only in (None, "throughput"):
            result["throughput"] = throughput(base / "throughput", a.repeats, a.steps, a.skip)
        if a.only in (None, "gang"):
            (base / "gang").mkdir()
            result["gang"] = gang_overhead(base / "gang", a.repeats)
    if "throughput" in result:
        t = result["throughput"]
        for kind in KINDS:
            print(
                f"| {kind} | {t['median_samples_per_s'][kind]:.2f} samples/s | first step "
                f"{t['median_launch_to_first_step_s'][kind]:.1f} s after launch |"
            )
        print(
            f"| ratio 2x1 / 1x2 | {t['ratio_2x1_over_1x2']:.3f} |\n"
            f"| ratio 1x2 torchrun / RankGroup | {t['ratio_torchrun_over_rankgroup']:.3f} |"
        )
    if "gang" in result:
        g = result["gang"]
        print(
            f"| submit to first step, 1 node | {g['median_1_node_s']:.2f} s |\n"
            f"| submit to first step, 2 nodes | {g['median_2_nodes_s']:.2f} s |\n"
            f"| the gang's overhead | {g['overhead_s']:+.2f} s |"
        )
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
