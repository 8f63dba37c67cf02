"""The strict child as a sparse delta: its size against the full model, for MiniLM at p = 0.1,
0.3 and 0.5.

Run: ``python -m bench.delta_size [--ps 0.1,0.3,0.5] [--ranks 2]``. For each p it runs a short
real ChildTuning-D job with ``strict_child`` (``childtune train``: MiniLM, 64 RTE examples, a
2-batch Fisher pass, 2 steps, CPU), then reads ``delta/delta.json`` and ``masks/audit.json``,
rebuilds the model with ``childtuning.apply_delta`` (median of 3 timings) and checks it equals
``model/`` bit for bit. The size of a delta depends only on p and the shapes, not on how long
the job trained: the kept elements' values are stored whether or not they moved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from childtuning import apply_delta
from childtuning.delta import load_weights

ROOT = Path(__file__).resolve().parents[1]


def run_job(job_dir: Path, p: float, ranks: int) -> None:
    spec = {
        "model": "minilm-l6",
        "dataset": {"preset": "glue/rte", "max_train_examples": 64, "max_eval_examples": 32},
        "childtuning": {
            "mode": "childtuning-d",
            "reserve_p": p,
            "fisher_num_batches": 2,
            "strict_child": True,
            "audit_strict": True,
        },
        "hyperparameters": {"max_steps": 2, "batch_size": 8, "max_seq_length": 64, "eval_every": 2},
        "resources": {"num_ranks": ranks, "zero_stage": 2, "device": "cpu"},
    }
    path = job_dir.parent / f"{job_dir.name}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "service.cli", "train", str(path), "--job-dir", str(job_dir), "--quiet"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"job at p={p} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ps", default="0.1,0.3,0.5")
    ap.add_argument("--ranks", type=int, default=2)
    a = ap.parse_args()
    from workers.train.model_io import model_location

    base = Path(model_location("minilm-l6"))
    print(f"base: {base} ({sum(f.stat().st_size for f in base.glob('*.safetensors')) / 1e6:.1f} MB)")
    print("| p | model/ MB | delta/ MB | delta / model | kept | changed | changed outside | apply_delta s |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    with tempfile.TemporaryDirectory() as tmp:
        for p in (float(x) for x in a.ps.split(",")):
            job = Path(tmp) / f"p{p}"
            run_job(job, p, a.ranks)
            info = json.loads((job / "delta" / "delta.json").read_text())
            audit = json.loads((job / "masks" / "audit.json").read_text())
            times = []
            for _ in range(3):
                start = time.perf_counter()
                rebuilt = apply_delta(base, job / "delta")
                times.append(time.perf_counter() - start)
            model = load_weights(job / "model")
            exact = rebuilt.keys() == model.keys() and all(
                torch.equal(rebuilt[k], v) for k, v in model.items()
            )
            if not exact:
                raise SystemExit(f"p={p}: apply_delta did not rebuild model/ bit-exactly")
            print(
                f"| {p} | {info['model_bytes'] / 1e6:.1f} | {info['delta_bytes'] / 1e6:.1f} | "
                f"{info['delta_bytes'] / info['model_bytes']:.3f} | {audit['kept']} | {audit['changed']} | "
                f"{audit['changed_outside']} | {statistics.median(times):.2f} |"
            )


if __name__ == "__main__":
    main()
