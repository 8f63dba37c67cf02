"""Two jobs at once on a CPU worker: is it faster than one job with every core?

Run: ``python -m bench.cpu_sharing [--steps 60] [--repeats 3] [--out figures.json]``. Each
layout trains the real MiniLM-L6 (``minilm-l6`` preset) on CoLA batches of 16 (padded to the
batch's longest, as jobs are), with AdamW, in separate processes:

- ``one job``: one process with every core's thread (``childtune worker --concurrency 1``);
- ``N jobs``: N processes at once with cores // N threads each (``--concurrency N``, which sets
  ``OMP_NUM_THREADS`` to cores // N).

The figure is the layout's total training steps per second (steps of all its processes over the
wall time from the first timed step to the last), the median over ``--repeats`` rounds that
alternate the layouts; the ratio is against ``one job`` in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(threads: int, steps: int, offset: int) -> None:
    """One process: ``steps`` timed training steps after 3 warm-ups; prints start and end times."""
    import torch

    torch.set_num_threads(threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from service.core.contract import DatasetSpec
    from workers.train.data import load_examples
    from workers.train.model_io import model_location

    folder = model_location("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    examples, _ = load_examples(DatasetSpec(preset="glue/cola"), "train")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-5, weight_decay=0.01)

    def step(i: int) -> None:
        chosen = examples[(offset + i) * 16 % len(examples) :][:16]
        enc = tokenizer(
            [e.text for e in chosen], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        loss = model(**enc, labels=torch.tensor([int(e.label) for e in chosen])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(3):
        step(i)
    print("ready", flush=True)
    sys.stdin.readline()  # every process of the layout starts its timed steps together
    start = time.time()
    for i in range(3, 3 + steps):
        step(i)
    print(json.dumps({"start": start, "end": time.time(), "steps": steps}), flush=True)


def layout(processes: int, threads: int, steps: int) -> float:
    """Total steps per second of ``processes`` processes with ``threads`` threads each."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-m", "bench.cpu_sharing", "--worker", str(threads), "--steps", str(steps)]
    procs = [
        subprocess.Popen(
            [*argv, "--offset", str(1000 * i)],
            env=env,
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for i in range(processes)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a process did not start"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    done = []
    for p in procs:
        out, _ = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"a benchmark process failed (exit {p.returncode})")
        done.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(d["end"] for d in done) - min(d["start"] for d in done)
    return sum(d["steps"] for d in done) / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_sharing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per process (default 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="N of the shared layout (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.steps, args.offset)
        return 0
    cores = os.cpu_count() or 1
    if args.jobs < 2 or cores // args.jobs < 1:
        print(f"--jobs must be between 2 and the {cores} cores", file=sys.stderr)
        return 2
    one, shared = [], []
    for r in range(args.repeats):
        one.append(layout(1, cores, args.steps))
        shared.append(layout(args.jobs, cores // args.jobs, args.steps))
        print(
            f"round {r + 1}: one job {one[-1]:.2f} steps/s, {args.jobs} jobs {shared[-1]:.2f} steps/s",
            flush=True,
        )
    a, b = statistics.median(one), statistics.median(shared)
    print(f"{cores} cores, MiniLM-L6 on CoLA, batch 16, median of {args.repeats} rounds:")
    print(f"  one job x {cores} threads:  {a:.2f} steps/s")
    print(f"  {args.jobs} jobs x {cores // args.jobs} threads: {b:.2f} steps/s  ({b / a:.2f}x)")
    if args.out is not None:
        figures = {
            "cores": cores, "jobs": args.jobs, "steps": args.steps, "repeats": args.repeats,
            "one_job_steps_per_s": one, "shared_steps_per_s": shared, "ratio_of_medians": b / a,
        }  # fmt: skip
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
