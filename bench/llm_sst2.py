"""SmolLM2-135M-Instruct on SST-2 as instruction data: exact-match accuracy before and after a
short fine-tune, ChildTuning-D beside vanilla.

Run: ``python -m bench.llm_sst2 [--steps 60] [--seeds 42] [--eval 200] [--modes vanilla,childtuning-d]``.
Each run is a real job of the training program (``childtune train``, one rank, CPU, fp32) on
the ``instruct/sst-2`` preset: the first ``--steps * 8`` training sentences, batch 8, one
epoch, and the first ``--eval`` dev sentences, scored before training (``eval_at_start``) and
after it by greedy exact match of "positive"/"negative" (``docs/llm.md``). Results go to
``docs/results/llm-sst2.json`` and the table to ``docs/results/llm-sst2.md``; finished runs are
kept in ``--work`` and not run again.
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
from typing import Any

from service.core.jobdir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "results" / "llm-sst2.json"
OUT_MD = ROOT / "docs" / "results" / "llm-sst2.md"


def spec(mode: str, seed: int, steps: int, evals: int, lr: float) -> dict[str, Any]:
    return {
        "model": "smollm2-135m",
        "dataset": {
            "preset": "instruct/sst-2",
            "max_train_examples": steps * 8,
            "max_eval_examples": evals,
            "overlong": "drop",
        },
        "childtuning": {"mode": mode, "reserve_p": 0.3, "fisher_num_batches": 16},
        "hyperparameters": {
            "epochs": 1,
            "batch_size": 8,
            "learning_rate": lr,
            "warmup_ratio": 0.1,
            "weight_decay": 0.01,
            "max_seq_length": 128,
            "seed": seed,
            "eval_at_start": True,
            "eval_samples": 3,
            "max_new_tokens": 8,
        },
        "resources": {"num_ranks": 1, "zero_stage": 2, "device": "cpu", "precision": "fp32"},
    }


def run(job_dir: Path, job: dict[str, Any]) -> dict[str, Any]:
    if (
        not (job_dir / "status.json").is_file()
        or json.loads((job_dir / "status.json").read_text())["status"] != "succeeded"
    ):
        job_dir.parent.mkdir(parents=True, exist_ok=True)
        path = job_dir.with_suffix(".json")
        path.write_text(json.dumps(job, indent=1))
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", "train", str(path), "--job-dir", str(job_dir)],
            cwd=ROOT,
            env={**os.environ, "DS_ACCELERATOR": "cpu"},
        )
        if proc.returncode != 0:
            raise SystemExit(f"{job_dir.name} failed (rc {proc.returncode}): see {job_dir}/launcher.log")
        (job_dir / "bench-seconds").write_text(f"{time.perf_counter() - started:.1f}\n")
    evals = [r for r in read_jsonl(job_dir / "metrics.jsonl") if r["kind"] == "eval"]
    before = next(r for r in evals if r.get("at_start"))
    after = next(r for r in evals if r.get("is_final"))
    samples = [e for e in read_jsonl(job_dir / "events.jsonl") if e["type"] == "samples"]
    seconds = (job_dir / "bench-seconds").read_text().strip() if (job_dir / "bench-seconds").exists() else "?"
    return {
        "mode": job["childtuning"]["mode"],
        "seed": job["hyperparameters"]["seed"],
        "steps": after["step"],
        "exact_match_before": before["eval_exact_match"],
        "exact_match_after": after["eval_exact_match"],
        "perplexity_before": before["eval_perplexity"],
        "perplexity_after": after["eval_perplexity"],
        "samples_before": samples[0]["samples"] if samples else [],
        "samples_after": samples[-1]["samples"] if samples else [],
        "wall_seconds": seconds,
    }


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| mode | seed | steps | exact match before | after | perplexity before | after | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['seed']} | {r['steps']} | {r['exact_match_before']:.3f} | "
            f"**{r['exact_match_after']:.3f}** | {r['perplexity_before']:.2f} | "
            f"{r['perplexity_after']:.3f} | {r['wall_seconds']} s |"
        )
    by_mode: dict[str, list[float]] = {}
    for r in rows:
        by_mode.setdefault(r["mode"], []).append(r["exact_match_after"])
    means = ", ".join(f"{m} {statistics.mean(v):.3f} (n={len(v)})" for m, v in by_mode.items())
    head = (
        f"SmolLM2-135M-Instruct (`smollm2-135m`), `instruct/sst-2`: {args.steps * 8} training sentences, "
        f"batch 8, {args.steps} steps, lr {args.lr:g}, p 0.3 for D (Fisher over 16 batches); exact match "
        f"on the first {args.eval} dev sentences; one rank, fp32, 2 CPU cores. "
        f"Mean exact match after: {means}."
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--modes", default="vanilla,childtuning-d")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "llm-sst2")
    ap.add_argument("--no-write", action="store_true", help="print the table only (a smoke run)")
    args = ap.parse_args(argv)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for mode in args.modes.split(","):
            name = f"{mode}-s{seed}-n{args.steps}-e{args.eval}-lr{args.lr:g}"
            rows.append(run(args.work / name, spec(mode, seed, args.steps, args.eval, args.lr)))
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.startswith("samples")}), flush=True)
    text = table(rows, args)
    print(text)
    if not args.no_write:
        OUT_JSON.write_text(
            json.dumps({"settings": vars(args) | {"work": None}, "runs": rows}, indent=1) + "\n"
        )
        OUT_MD.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
