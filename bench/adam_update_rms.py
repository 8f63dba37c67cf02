"""How big is AdamW's step under gradient dropout? The RMS of the per-step update against vanilla.

ChildTuning-F keeps each gradient element with probability p and divides by p. Adam's first
moment then averages to the gradient g, its second moment to g^2 / p, so where the gradient's
mean dominates its noise the step m / sqrt(v) shrinks by sqrt(p): a smaller effective learning
rate, not only a sparser one. Update-dropout masks the update itself, after Adam: kept
elements move by u / p, dropped ones not at all, so its RMS grows as 1 / sqrt(p).

This measures it on the real model: MiniLM-L6 on CoLA batches, AdamW (lr 4e-5 constant, no
weight decay, no clipping, so only the masking differs), the same initial weights and batches
for every run. Each step's update of the masked parameters (the encoder layers) is taken
element-wise, its RMS divided by the learning rate; a run's value is the median over steps
after the first 10 (Adam's moments warm up). Ratios are against vanilla's run.

    python -m bench.adam_update_rms [--steps 60] [--out docs/results]

Writes ``adam-update-rms.json`` and ``adam-update-rms.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import torch

from childtuning import ChildTuning, ChildTuningConfig
from childtuning.config import Mode

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "glue" / "CoLA" / "train.tsv"
LR = 4e-5
RUNS = [("vanilla", 1.0)] + [(m, p) for m in ("childtuning-f", "update-dropout") for p in (0.1, 0.3, 0.5)]


def _batches(tokenizer: Any, steps: int, batch: int, seed: int) -> list[dict[str, torch.Tensor]]:
    with open(DATA, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = [r for r in rows if len(r) >= 4]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=g).tolist()
    out = []
    for i in range(steps):
        chosen = [rows[j] for j in order[i * batch : (i + 1) * batch]]
        enc = tokenizer(
            [r[3] for r in chosen], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        enc["labels"] = torch.tensor([int(r[1]) for r in chosen])
        out.append(dict(enc))
    return out


def _run(
    mode: str, p: float, model_dir: Path, batches: list[dict[str, torch.Tensor]], seed: int
) -> tuple[list[float], float]:
    """Each step's update RMS / lr, and the net displacement's RMS / (steps * lr): the mean step."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    handle = None
    pattern = r"encoder\.layer\."
    if mode != "vanilla":
        ct = ChildTuning(
            model, ChildTuningConfig(mode=cast(Mode, mode), reserve_p=p, param_filter=pattern, seed=seed)
        )
        handle = ct.attach(optimizer)
    watched = [t for n, t in model.named_parameters() if "encoder.layer." in n]
    start = [t.detach().clone() for t in watched]
    rms: list[float] = []
    for batch in batches:
        before = [t.detach().clone() for t in watched]
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        total = sum(float(((t.detach() - b) ** 2).sum()) for t, b in zip(watched, before, strict=True))
        count = sum(t.numel() for t in watched)
        rms.append(math.sqrt(total / count) / LR)
    if handle is not None:
        handle.remove()
    moved = sum(float(((t.detach() - b) ** 2).sum()) for t, b in zip(watched, start, strict=True))
    net = math.sqrt(moved / sum(t.numel() for t in watched)) / (LR * len(batches))
    return rms, net


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ps = [0.1, 0.3, 0.5]
    grid = [x / 100 for x in range(5, 101)]
    ax.plot(grid, [math.sqrt(x) for x in grid], color="grey", linestyle="--", label="sqrt(p)")
    ax.plot(grid, [1 / math.sqrt(x) for x in grid], color="grey", linestyle=":", label="1 / sqrt(p)")
    for mode, marker in (("childtuning-f", "o"), ("update-dropout", "s")):
        ratios = [next(r["ratio"] for r in results if r["mode"] == mode and r["p"] == p) for p in ps]
        net = [next(r["net_ratio"] for r in results if r["mode"] == mode and r["p"] == p) for p in ps]
        line = ax.plot(ps, ratios, marker=marker, linewidth=2, label=f"{mode}: per-step update RMS")
        ax.plot(ps, net, marker=marker, linewidth=1, linestyle="-.", color=line[0].get_color(),
                label=f"{mode}: net displacement / steps")  # fmt: skip
    ax.set_xlabel("reserve ratio p")
    ax.set_ylabel("RMS of AdamW's update / vanilla's (same lr)")
    ax.set_yscale("log")
    ax.set_title("AdamW's step under gradient and update dropout (MiniLM-L6, CoLA, encoder layers)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.adam_update_rms", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from workers.train.model_io import model_location

    model_dir = Path(model_location("minilm-l6"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batches = _batches(tokenizer, args.steps, args.batch, args.seed)
    per_run: dict[tuple[str, float], list[float]] = {}
    nets: dict[tuple[str, float], float] = {}
    for mode, p in RUNS:
        start = time.perf_counter()
        per_run[(mode, p)], nets[(mode, p)] = _run(mode, p, model_dir, batches, args.seed)
        median = statistics.median(per_run[(mode, p)][10:])
        print(
            f"{mode:15s} p={p:.1f}: median update RMS / lr {median:.4f}",
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    base = per_run[("vanilla", 1.0)]
    results = []
    for (mode, p), rms in per_run.items():
        ratios = [r / b for r, b in zip(rms[10:], base[10:], strict=True)]
        results.append(
            {
                "mode": mode,
                "p": p,
                "median_rms_over_lr": statistics.median(rms[10:]),
                "ratio": statistics.median(ratios),
                "ratio_iqr": [statistics.quantiles(ratios, n=4)[0], statistics.quantiles(ratios, n=4)[2]],
                "sqrt_p": math.sqrt(p),
                "net_over_lr_step": nets[(mode, p)],
                "net_ratio": nets[(mode, p)] / nets[("vanilla", 1.0)],
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": "minilm-l6", "data": "glue/cola train", "steps": args.steps, "batch": args.batch,
        "lr": LR, "weight_decay": 0.0, "measured_over": f"steps 11..{args.steps}",
        "params": "encoder.layer.*",
    }  # fmt: skip
    (args.out / "adam-update-rms.json").write_text(
        json.dumps({"setup": meta, "results": results}, indent=1) + "\n"
    )
    _plot([r for r in results if r["mode"] != "vanilla"], args.out / "adam-update-rms.png")
    for r in results:
        print(
            f"{r['mode']:15s} p={r['p']:.1f}: per-step ratio {r['ratio']:.3f}, net ratio {r['net_ratio']:.3f}"
            f" (sqrt(p) {r['sqrt_p']:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
