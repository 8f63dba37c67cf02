"""The GPU check's parts that run jobs, and its report (``bench/gpu_check.sh`` runs them all).

Run one part: ``python -m bench.gpu_check PART --out DIR [--device cuda|cpu]``; each part writes
``DIR/<part>.json``. ``report`` merges what the parts wrote into ``gpu-check.json`` and
``gpu-check.md``. On a CPU (``--device cpu``, the rehearsal) the parts that need CUDA write a
row saying they were skipped and why, so a report always comes out.

- ``precision``: ChildTuning-D jobs (the training program, MiniLM-L6 on RTE, one rank, ZeRO-2) in
  fp32, fp16 and bf16 at once on the GPU: the kept sets' overlap with fp32's, Fisher batches the
  loss scaler skipped, the loss curves, samples/s, final accuracy.
- ``sft``: SmolLM2-135M-shaped SFT in bf16, batch 8 x 512: our training program (vanilla and D)
  against a plain PyTorch loop of the same model, batch and precision (``bench/plain_loop.py``),
  tokens/s and model FLOP utilisation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "fp16", "bf16")
# Dense bf16 peak of the cards this runs on (SXM parts; the H200 has the H100's compute).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}
# pytest's closing line: "3 passed, 8 skipped in 2.1s", "1 failed, 2 passed in ...", "5 errors ..."
PYTEST_COUNTS = re.compile(r"\b\d+ (passed|failed|skipped|errors?|deselected)\b.* in [\d.]+s")
PARTS = ("gpu_tests", "precision", "step_minilm", "step_smollm2", "step_jobs", "profile", "segments", "sft")


def job_env(device: str) -> dict[str, str]:
    """The ranks' environment (:func:`workers.launch.rank_env`), offline."""
    from workers.launch import rank_env

    return {**rank_env(device), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def start_job(job_dir: Path, spec: dict[str, Any], device: str) -> subprocess.Popen[bytes]:
    job_dir.parent.mkdir(parents=True, exist_ok=True)
    spec_path = job_dir.parent / f"{job_dir.name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "service.cli", "train", str(spec_path), "--job-dir", str(job_dir)]
    log = (job_dir.parent / f"{job_dir.name}.out").open("wb")
    return subprocess.Popen(argv, env=job_env(device), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def median_of(rows: list[dict[str, Any]], key: str, digits: int) -> float | None:
    return round(statistics.median(r[key] for r in rows), digits) if rows else None


def job_summary(job_dir: Path, rc: int | None) -> dict[str, Any]:
    """What a finished (or killed) job left: its loss curve, throughput, evaluation, error."""
    metrics = records(job_dir / "metrics.jsonl")
    train = [r for r in metrics if r.get("kind") == "train"]
    evals = [r for r in metrics if r.get("kind") == "eval"]
    status = json.loads((job_dir / "status.json").read_text()) if (job_dir / "status.json").exists() else {}
    steady = train[3:] or train  # the first steps compile and warm the allocator
    out: dict[str, Any] = {
        "rc": rc,
        "status": status.get("status"),
        "error": status.get("error"),
        "steps": len(train),
        "loss_curve": [[r["step"], round(r["loss"], 5)] for r in train],
        "samples_per_s": median_of(steady, "samples_per_second", 2),
        "tokens_per_s": median_of(steady, "tokens_per_second", 1),
        "peak_memory_mib": max((r.get("gpu_peak_memory_mib") or 0 for r in train), default=None),
        "final_eval": {k: v for k, v in evals[-1].items() if k not in ("kind", "time")} if evals else None,
    }
    summary = job_dir / "masks" / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        out["fisher_batches"] = data.get("num_fisher_batches")
        out["fisher_batches_skipped"] = data.get("num_fisher_batches_skipped")
    if rc not in (0, None):
        launcher = job_dir / "launcher.log"
        out["log_tail"] = launcher.read_text()[-3000:] if launcher.exists() else ""
    return out


def wait_all(procs: dict[str, subprocess.Popen[bytes]], budget: float) -> dict[str, int | None]:
    deadline = time.monotonic() + budget
    codes: dict[str, int | None] = {}
    for name, proc in procs.items():
        try:
            codes[name] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            codes[name] = None  # cut by the budget
    return codes


def part_precision(args: argparse.Namespace) -> dict[str, Any]:
    precisions = PRECISIONS if args.device == "cuda" else ("fp32", "bf16")
    work = Path(args.work) / "precision"
    train_examples = 1600 if args.device == "cuda" else 64
    procs = {}
    for precision in precisions:
        spec = {
            "model": "minilm-l6",
            # On a CPU (the rehearsal) 64 examples: four Fisher batches instead of 100.
            "dataset": {"preset": "glue/rte", "max_train_examples": train_examples, "max_eval_examples": 277},
            "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
            "hyperparameters": {
                "max_steps": args.steps,
                "batch_size": 16,
                "learning_rate": 4e-5,
                "max_seq_length": 128,
                "eval_every": args.steps,
                "save_every": args.steps,
                "seed": 42,
            },
            "resources": {"num_ranks": 1, "zero_stage": 2, "precision": precision, "device": args.device},
        }
        procs[precision] = start_job(work / precision, spec, args.device)
    codes = wait_all(procs, args.budget)
    rows = {p: job_summary(work / p, codes[p]) for p in precisions}
    out: dict[str, Any] = {"jobs": rows}
    if args.device != "cuda":
        out["skipped"] = {"fp16": "needs CUDA (fp16 jobs are refused on a CPU; bf16 ran there)"}
    reference = work / "fp32" / "masks"
    for precision in precisions[1:]:
        other = work / precision / "masks"
        if (reference / "summary.json").exists() and (other / "summary.json").exists():
            rows[precision]["mask_overlap_with_fp32"] = mask_overlap(reference, other)
    return out


def mask_overlap(a_dir: Path, b_dir: Path) -> dict[str, Any]:
    """The share of fp32's kept elements the other mask keeps too, overall and its worst tensor."""
    from childtuning import load_full_mask
    from childtuning import mask_overlap as overlap

    return overlap(load_full_mask(a_dir), load_full_mask(b_dir))


def sft_rows(path: Path, data_root: Path, seq: int, rows: int = 400) -> Path:
    """Prompt-completion rows longer than ``seq`` tokens (RTE's sentences strung together), the
    prompt about a quarter of them: truncated at ``seq``, every trained sequence is ``seq``
    tokens long, as in the plain loop, and most of it is completion."""
    lines = (data_root / "glue" / "RTE" / "train.tsv").read_text().splitlines()[1:]
    text = " ".join(line.split("\t")[1] for line in lines if line.count("\t") >= 3)
    out, at = [], 0
    for _ in range(rows):
        prompt, completion = text[at : at + seq], text[at + seq : at + seq * 7]  # ~4 characters a token
        at = (at + seq * 7) % (len(text) - seq * 8)
        out.append(json.dumps({"prompt": prompt, "completion": " " + completion}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return path


def peak_tflops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float | None) -> float | None:
    return round(tokens_per_s * flops_per_token / (peak_tflops * 1e12), 4) if peak_tflops else None


def part_sft(args: argparse.Namespace) -> dict[str, Any]:
    """On a CPU (the rehearsal) our jobs run in fp32 at batch 2 x 32, so the spec and the data are
    proven; the plain loop, the bf16 numbers and MFU need CUDA."""
    from bench.plain_loop import flops_per_token, run_plain

    cuda = args.device == "cuda"
    batch, seq, precision = (8, 512, "bf16") if cuda else (2, 32, "fp32")
    model_dir = Path(args.smollm2)
    data_root = Path(os.environ.get("CHILDTUNE_DATA", str(ROOT.parent / "shared" / "data")))
    work = Path(args.work) / "sft"
    train = sft_rows(work / "train.jsonl", data_root, seq)
    dev = sft_rows(work / "dev.jsonl", data_root, seq, rows=4)
    out: dict[str, Any] = {"model": str(model_dir), "batch": batch, "seq": seq, "precision": precision}
    per_token = flops_per_token(model_dir, seq)
    peak = peak_tflops()
    out["flops_per_token"] = per_token
    out["peak_bf16_tflops"] = peak
    if cuda:
        plain = run_plain(model_dir, batch=batch, seq=seq, steps=args.steps, warmup=5)
        out["plain"] = {**plain, "mfu": mfu(plain["tokens_per_s"], per_token, peak)}
    else:
        out["skipped"] = "the plain loop, bf16 and MFU need CUDA: our jobs ran in fp32 at batch 2 x 32"
    for mode in ("vanilla", "childtuning-d"):
        spec: dict[str, Any] = {
            "model": str(model_dir),
            "dataset": {
                "train_file": str(train),
                "eval_file": str(dev),
                "task_type": "causal-lm",
                "metric": "exact_match",
                "overlong": "truncate",
                "chat_template": False,
                "max_eval_examples": 4,
            },
            "childtuning": {"mode": mode, "reserve_p": 0.3},
            "hyperparameters": {
                "max_steps": args.steps,
                "batch_size": batch,
                "learning_rate": 5e-5,
                "max_seq_length": seq,
                "eval_every": args.steps,
                "save_every": args.steps,
                "seed": 3,
                "eval_samples": 1,
                "max_new_tokens": 2,
            },
            "resources": {"num_ranks": 1, "zero_stage": 2, "precision": precision, "device": args.device},
        }
        if mode == "childtuning-d":  # the Fisher pass over 8 batches, not the default 100
            spec["childtuning"] = {**spec["childtuning"], "fisher_num_batches": 8}
        job_dir = work / mode
        codes = wait_all({mode: start_job(job_dir, spec, args.device)}, args.budget / 2)
        row = job_summary(job_dir, codes[mode])
        row.pop("loss_curve")
        if row["samples_per_s"]:
            tokens = row["samples_per_s"] * seq
            row["tokens_per_s_all"] = round(tokens, 1)
            row["mfu"] = mfu(tokens, per_token, peak)
            if "plain" in out:
                row["vs_plain"] = round(tokens / out["plain"]["tokens_per_s"], 3)
        out[mode] = row
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def read_part(out_dir: Path, part: str) -> dict[str, Any]:
    """A part's result: ``<part>.json`` (the job parts), ``<part>.jsonl`` (rows of bench.gpu_step),
    or the gpu-marked tests' log, with the line where pytest counts them."""
    json_path, rows_path, log_path = (out_dir / f"{part}{ext}" for ext in (".json", ".jsonl", ".log"))
    if json_path.exists():
        return dict(json.loads(json_path.read_text()))
    if rows_path.exists():
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.startswith("{")]
        return {"rows": rows}
    if log_path.exists():
        text = log_path.read_text()
        counted = [line for line in text.splitlines() if PYTEST_COUNTS.search(line)]
        return {"summary": counted[-1].strip("= ") if counted else text[-300:]}
    return {"missing": "the part wrote nothing (cut by its budget before its first row, or not run)"}


def report(out_dir: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {part: read_part(out_dir, part) for part in PARTS}
    env_path = out_dir / "gpu.txt"
    merged["machine"] = env_path.read_text().strip() if env_path.exists() else None
    (out_dir / "gpu-check.json").write_text(json.dumps(merged, indent=1))
    lines = ["# GPU check", "", f"Machine: {merged['machine']}", ""]
    tests = merged["gpu_tests"]
    lines += ["## gpu-marked tests", "", f"`{tests.get('summary', tests)}`", ""]
    prec = merged["precision"]
    lines += ["## ChildTuning-D jobs by precision (MiniLM-L6, RTE)", ""]
    lines += [
        "| precision | rc | status | steps | samples/s | Fisher skipped | overlap with fp32 | final eval |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for precision, row in (prec.get("jobs") or {}).items():
        overlap = (row.get("mask_overlap_with_fp32") or {}).get("overlap")
        final = row.get("final_eval") or {}
        score = {k: v for k, v in final.items() if k not in ("step", "epoch", "loss")}
        lines.append(
            f"| {precision} | {row['rc']} | {row['status']} | {row['steps']} | {fmt(row['samples_per_s'])} | "
            f"{fmt(row.get('fisher_batches_skipped'))} | {fmt(overlap)} | {fmt(score)} |"
        )
    for precision, why in (prec.get("skipped") or {}).items():
        lines.append(f"| {precision} | skipped: {why} | | | | | | |")
    lines += ["", "## Step time by mode", ""]
    lines += [
        "| model | precision | jobs | mode | fused | ms/step | vs vanilla | peak MiB | Fisher vs fwd+bwd |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for part in ("step_minilm", "step_smollm2", "step_jobs"):
        for row in merged[part].get("rows", []):
            cells = [row["precision"], row["jobs"], row["mode"], row["fused"], row["ms_per_step"]]
            cells += [row.get(k) for k in ("vs_vanilla", "peak_memory_mib", "fisher_vs_fwd_bwd")]
            lines.append(
                f"| {row['model']} ({row['batch']}x{row['seq']}) | {' | '.join(fmt(c) for c in cells)} |"
            )
        if not merged[part].get("rows"):
            lines.append(f"| {part}: {merged[part].get('missing', 'no rows')} | | | | | | | | |")
    lines += ["", "## One optimizer.step(): launches and host syncs", ""]
    lines += ["| layers | parameter tensors | mode | fused | counts |", "|---|---|---|---|---|"]
    for row in merged["profile"].get("rows", []):
        lines.append(
            f"| {row['layers']} | {row['param_tensors']} | {row['mode']} | {fmt(row['fused'])} | "
            f"{row.get('optimizer_step')} |"
        )
    lines += ["", "## A flat ZeRO partition's fused step: a kernel per fragment or one launch", ""]
    lines += [
        "| model | fragments | mode | kernel | ms | vs vanilla | counts |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in merged["segments"].get("rows", []):
        counts = {k: row[k] for k in ("dispatched_ops", "launches", "host_syncs") if k in row}
        lines.append(
            f"| {row['model']} | {row['fragments']} | {row['mode']} | {row['kernel']} | {fmt(row['ms'])} | "
            f"{fmt(row.get('vs_vanilla'))} | {counts} |"
        )
    if not merged["segments"].get("rows"):
        lines.append(f"| segments: {merged['segments'].get('missing', 'no rows')} | | | | | | |")
    sft = merged["sft"]
    lines += ["", "## SmolLM2-135M-shaped SFT, bf16, batch 8 x 512: ours against a plain loop", ""]
    if "skipped" in sft or "missing" in sft or "error" in sft:
        lines.append(f"Not measured: {sft.get('skipped') or sft.get('missing') or sft.get('error')}")
    if "missing" not in sft:
        lines += ["| run | tokens/s | MFU | vs plain | peak MiB |", "|---|---|---|---|---|"]
        plain = sft.get("plain", {})
        lines.append(
            f"| plain PyTorch loop | {fmt(plain.get('tokens_per_s'))} | {fmt(plain.get('mfu'))} | 1 | "
            f"{fmt(plain.get('peak_memory_mib'))} |"
        )
        for mode in ("vanilla", "childtuning-d"):
            row = sft.get(mode) or {}
            cells = [fmt(row.get(k)) for k in ("tokens_per_s_all", "mfu", "vs_plain", "peak_memory_mib")]
            lines.append(f"| ours, {mode} (rc {row.get('rc')}) | {' | '.join(cells)} |")
    (out_dir / "gpu-check.md").write_text("\n".join(lines) + "\n")
    return merged


def publish(source: Path) -> int:
    """Copy the check's report from ``source`` (where its $OUT came back) under docs/results/."""
    results = ROOT / "docs" / "results"
    names = ("gpu-check.md", "gpu-check.json", "gpu-tests.log")
    missing = [n for n in names if not (source / n).exists()]
    if missing:
        print(
            f"publish: {source} lacks {', '.join(missing)}: not the GPU check's output folder",
            file=sys.stderr,
        )
        return 2
    for name in names:
        (results / name).write_bytes((source / name).read_bytes())
        print(f"wrote {results / name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=("precision", "sft", "report", "publish"))
    ap.add_argument("--out", help="the folder the part's JSON goes to (publish: the check's $OUT)")
    ap.add_argument("--work", default="/tmp/gpu-check-work", help="job folders")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds before the part's jobs are stopped")
    ap.add_argument("--smollm2", default="/tmp/smollm2-shape", help="the SmolLM2-shaped model folder")
    args = ap.parse_args(argv)
    if not args.out:
        ap.error(
            "--out: give the folder the part writes to (publish: the folder the check's files came back to)"
        )
    out_dir = Path(args.out)
    if args.part == "publish":
        return publish(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        report(out_dir)
        return 0
    started = time.monotonic()
    try:
        result = part_precision(args) if args.part == "precision" else part_sft(args)
    except Exception as exc:  # the part's own failure goes into its row, the check goes on
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = round(time.monotonic() - started, 1)
    (out_dir / f"{args.part}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "jobs"})[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
