"""The CPU-sharing benchmark's harness: both layouts train the real MiniLM-L6 in separate
processes that start their timed steps together, and it reports their ratio."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.stack import ROOT


def test_the_benchmark_runs_both_layouts_and_prints_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    argv = [sys.executable, "-m", "bench.cpu_sharing", "--steps", "2", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cores = os.cpu_count() or 1
    one = re.search(rf"one job x {cores} threads: +([\d.]+) steps/s", proc.stdout)
    two = re.search(rf"2 jobs x {cores // 2} threads: ([\d.]+) steps/s +\(([\d.]+)x\)", proc.stdout)
    assert one and two, proc.stdout
    assert float(one.group(1)) > 0 and float(two.group(1)) > 0
    figures = json.loads(out.read_text())
    (a,), (b,) = figures["one_job_steps_per_s"], figures["shared_steps_per_s"]
    assert f"{a:.2f}" == one.group(1) and f"{b:.2f}" == two.group(1)
    assert figures["ratio_of_medians"] == b / a and two.group(2) == f"{b / a:.2f}"
