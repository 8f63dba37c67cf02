"""``childtune demo``: the first run of a newcomer, through the real local stack (``childtune up``)
with the real MiniLM-L6 and SST-2; shortened by ``--max-steps``, which keeps both evaluations."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.local_stack import DEMO_SPEC, before_after
from tests.e2e.stack import ROOT
from tests.e2e.test_up import processes_with_env


@pytest.mark.slow
def test_demo_prints_the_dashboard_link_and_the_dev_metric_before_and_after(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHILDTUNE_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "DS_ACCELERATOR": "cpu",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "CHILDTUNE_STATE": str(state),  # the marker of the stack's processes, below
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo", "--state", str(state), "--max-steps", "3"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"

    link = re.search(r"^Dashboard: (http://127\.0\.0\.1:\d+)/ui/#/jobs/(job-[0-9a-f]+)$", out, re.M)
    assert link, out
    url, job_id = link.groups()
    assert f"Submitted {job_id}:" in out and f"({url})" in out

    # The job's own records: the step-0 evaluation (before any update) and the final one.
    job_dir = state / "artifacts" / "jobs" / job_id
    metrics = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in metrics if r["kind"] == "eval"]
    assert [(r["step"], r.get("at_start", False), r["is_final"]) for r in evals] == [
        (0, True, False),
        (3, False, True),
    ]
    assert [r["step"] for r in metrics if r["kind"] == "train"] == [1, 2, 3]
    assert (
        len(json.loads((job_dir / "predictions.json").read_text())["predictions"])
        == (DEMO_SPEC["dataset"]["max_eval_examples"])
    )
    line = re.search(
        r"^dev accuracy: (\d\.\d\d) before fine-tuning -> (\d\.\d\d) after \((\d+ min )?\d+ s\)$", out, re.M
    )
    assert line, out
    assert float(line.group(1)) == round(evals[0]["eval_accuracy"], 2)
    assert float(line.group(2)) == round(evals[1]["eval_accuracy"], 2)
    assert "childtune train docs/examples/rte-d.yaml" in out
    assert (job_dir / "model" / "config.json").is_file()

    # The demo stopped the stack it started.
    assert "Stopping the local stack..." in out
    assert not (state / "up.json").exists()
    assert processes_with_env(f"CHILDTUNE_STATE={state}") == []


def test_before_after_reads_the_step_0_and_the_final_evaluation() -> None:
    start = {
        "kind": "eval",
        "step": 0,
        "at_start": True,
        "eval_accuracy": 0.4908,
        "main_metric": "eval_accuracy",
    }
    middle = {"kind": "eval", "step": 20, "eval_accuracy": 0.7, "main_metric": "eval_accuracy"}
    final = {"kind": "eval", "step": 40, "eval_accuracy": 0.8612, "main_metric": "eval_accuracy"}
    train = {"kind": "train", "step": 1, "loss": 0.7}
    job = {"final_metrics": final}
    assert before_after([start, train, middle, final], job, 160.4) == (
        "dev accuracy: 0.49 before fine-tuning -> 0.86 after (2 min 40 s)"
    )
    assert (
        before_after([start, final], job, 59.6)
        == "dev accuracy: 0.49 before fine-tuning -> 0.86 after (1 min 0 s)"
    )
    assert before_after([train, middle, final], job, 10) is None  # no evaluation at the start
    assert before_after([start], {"final_metrics": None}, 10) is None  # no final evaluation
