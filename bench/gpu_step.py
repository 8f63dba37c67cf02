"""A MiniLM-sized training step on one GPU with each ChildTuning mode, against vanilla.

Run: ``python -m bench.gpu_step [--modes vanilla,childtuning-f] [--jobs 1]`` on a CUDA machine.
A randomly initialised BERT of MiniLM-L6's shape (6 layers, hidden 384, 12 heads), batch 16 of 64
tokens, torch's AdamW with the ChildTuning hook attached (its fused step), fp32. Each row is the
median over ``--windows`` windows of ``--steps`` steps (the GPU synchronised at each window's
ends, so a step's host-device stalls count), after ``--warmup`` steps (the first compiles).
``--jobs N`` runs N such processes at once on the GPU, as N study jobs share it, and reports
the median over them. Ratios are against vanilla in the same run. ``--code DIR`` measures the
childtuning package in DIR instead of the repo's (another version of it, on the same machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any, cast


def measure(mode: str, steps: int, windows: int, warmup: int, device: str = "cuda") -> float:
    """Median milliseconds per step of ``mode`` in this process."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from childtuning import ChildTuning, ChildTuningConfig
    from childtuning.config import Mode

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    model: Any = BertForSequenceClassification(config)
    model = model.to(device)
    gen = torch.Generator().manual_seed(1)
    batches = [
        {
            "input_ids": torch.randint(0, 30522, (16, 64), generator=gen).to(device),
            "labels": torch.randint(0, 2, (16,), generator=gen).to(device),
        }
        for _ in range(8)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-5, weight_decay=0.01)
    if mode != "vanilla":
        ct = ChildTuning(model, ChildTuningConfig(mode=cast(Mode, mode), reserve_p=0.3))
        if mode == "childtuning-d":
            ct.compute_fisher(batches[:4])
        ct.attach(optimizer)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(**batches[i % len(batches)]).loss.backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    times = []
    for _ in range(windows):
        sync()
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        sync()
        times.append((time.perf_counter() - start) / steps * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_step", description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="vanilla,childtuning-d,childtuning-f,update-dropout")
    ap.add_argument("--jobs", type=int, default=1, help="processes at once on the GPU")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to rehearse the script")
    ap.add_argument("--code", default=None, help="a folder holding another childtuning package to measure")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    if args.child:  # one process: every mode in turn, a JSON line each
        if args.code:
            sys.path.insert(0, args.code)
        for mode in modes:
            ms = measure(mode, args.steps, args.windows, args.warmup, args.device)
            import childtuning

            print(json.dumps({"mode": mode, "ms": ms, "from": childtuning.__file__}), flush=True)
        return 0
    argv_child = [sys.executable, "-m", "bench.gpu_step", "--child", "--modes", args.modes]
    argv_child += ["--steps", str(args.steps), "--windows", str(args.windows), "--warmup", str(args.warmup)]
    argv_child += ["--device", args.device] + (["--code", args.code] if args.code else [])
    procs = [subprocess.Popen(argv_child, stdout=subprocess.PIPE, text=True) for _ in range(args.jobs)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        print("gpu_step: a process failed", file=sys.stderr)
        return 1
    per_mode: dict[str, list[float]] = {m: [] for m in modes}
    source = ""
    for out in outs:
        for line in out.strip().splitlines():
            row = json.loads(line)
            per_mode[row["mode"]].append(float(row["ms"]))
            source = row["from"]
    base = statistics.median(per_mode["vanilla"]) if per_mode.get("vanilla") else None
    for mode in modes:
        ms = statistics.median(per_mode[mode])
        row = {"mode": mode, "jobs": args.jobs, "code": source, "ms_per_step": round(ms, 2)}
        if base:
            row["vs_vanilla"] = round(ms / base, 2)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
