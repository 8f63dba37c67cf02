"""Throughput and peak memory of a real job, from its own records.

Run: ``python -m bench.job_throughput SPEC [--ranks N] [--device cuda] [--skip 5]`` to run a job
with ``childtune train`` and summarise it, or ``python -m bench.job_throughput --job-dir DIR``
to summarise a job that ran. Prints one markdown row: medians of samples/s and tokens/s over
the training steps after the first ``--skip`` (compilation and warm-up), peak GPU memory
(rank 0, on GPUs), the dev metric at the end, and the job's wall time.

For the GPU measurement issue 5 asks for (bf16, the ``minilm-l6`` preset, RTE, 1 rank):
``python -m bench.job_throughput docs/examples/rte-d.yaml --device cuda --precision bf16``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from service.core.jobdir import read_jsonl


def summarise(job_dir: Path, skip: int) -> str:
    records = read_jsonl(job_dir / "metrics.jsonl")
    events = read_jsonl(job_dir / "events.jsonl")
    train = [r for r in records if r.get("kind") == "train"][skip:]
    evals = [r for r in records if r.get("kind") == "eval"]
    started = next((e for e in events if e.get("type") == "started"), {})
    if not train:
        raise SystemExit(f"{job_dir}: no training steps after the first {skip}")
    samples = statistics.median(r["samples_per_second"] for r in train)
    tokens = statistics.median(r["tokens_per_second"] for r in train)
    memory = max((r.get("gpu_peak_memory_mib") or 0.0) for r in train)
    last = evals[-1] if evals else {}
    metric = f"{last.get('main_metric', '-')} {last.get('main_value', float('nan')):.4f}" if last else "-"
    wall = events[-1]["time"] - events[0]["time"] if events else float("nan")
    spec = json.loads((job_dir / "job.json").read_text())
    res = spec["resources"]
    return (
        f"| {spec['model']} | {spec['dataset'].get('preset', 'files')} | {spec['childtuning']['mode']} | "
        f"{started.get('device', '?')} {res['precision']} x{res['num_ranks']} ZeRO-{res['zero_stage']} | "
        f"{spec['hyperparameters']['batch_size']} | {len(train)} | {samples:.1f} | {tokens:.0f} | "
        f"{memory:.0f} | {metric} | {wall:.0f} |"
    )


HEADER = (
    "| model | data | mode | device | batch | steps timed | samples/s (median) | tokens/s (median) | "
    "peak GPU MiB | dev metric | wall s |\n|---|---|---|---|--:|--:|--:|--:|--:|---|--:|"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", nargs="?")
    ap.add_argument("--job-dir", type=Path, default=None)
    ap.add_argument("--ranks", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--skip", type=int, default=5, help="first steps left out (warm-up)")
    a = ap.parse_args(argv)
    job_dir = a.job_dir
    if a.spec is not None:
        spec_path = Path(a.spec)
        if a.precision is not None:
            from service.core.contract import load_spec

            data = load_spec(spec_path).model_dump(mode="json")
            data["resources"]["precision"] = a.precision
            spec_path = Path(tempfile.mkdtemp()) / "spec.json"
            spec_path.write_text(json.dumps(data))
        job_dir = job_dir or Path(tempfile.mkdtemp(prefix="childtune-bench-")) / "job"
        cmd = [sys.executable, "-m", "service.cli", "train", str(spec_path), "--job-dir", str(job_dir)]
        cmd += ["--ranks", str(a.ranks)] if a.ranks else []
        cmd += ["--device", a.device] if a.device else []
        code = subprocess.call(cmd)
        if code != 0:
            return code
    if job_dir is None:
        ap.error("give a SPEC to run, or --job-dir of a job that ran")
    print(HEADER)
    print(summarise(job_dir, a.skip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
