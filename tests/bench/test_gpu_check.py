"""The GPU check's step benchmark and report, run on the CPU at toy sizes: every mode fused and
generic gets a row with its time, its ratio to vanilla in the same process and its profile, and
the report turns the parts' files into its tables (what a GPU lease relies on coming out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import gpu_check, gpu_step, segments_step

pytestmark = pytest.mark.slow

TOY = ["--device", "cpu", "--layers", "1", "--batch", "2", "--seq", "8", "--steps", "1", "--windows", "1"]
TOY += ["--warmup", "1", "--fisher-batches", "1", "--profile"]


def test_the_step_benchmark_measures_every_variant_and_the_report_tables_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_step.main(TOY) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    variants = [(r["mode"], r["fused"]) for r in rows]
    assert variants == [("vanilla", None)] + [
        (m, f) for m in ("childtuning-d", "childtuning-f", "update-dropout") for f in (True, False)
    ]
    assert all(r["ms_per_step"] > 0 and r["vs_vanilla"] > 0 and r["param_tensors"] == 25 for r in rows)
    assert rows[0]["vs_vanilla"] == 1.0
    d_rows = [r for r in rows if r["mode"] == "childtuning-d"]
    assert all(r["fisher_ms_per_batch"] > 0 and r["fisher_vs_fwd_bwd"] > 0 for r in d_rows)
    fused = {r["mode"]: r["optimizer_step"] for r in rows if r["fused"]}
    assert all(p["compiled_calls"] == 25 for p in fused.values())  # one AdamW kernel a tensor
    # the report: the rows above as the minilm part, a part that wrote nothing, the tests' log
    (tmp_path / "step_minilm.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "gpu_tests.log").write_text("SKIPPED [1] x\n8 skipped, 18 deselected in 2.13s\nrc=0\n")
    merged = gpu_check.report(tmp_path)
    assert len(merged["step_minilm"]["rows"]) == 7 and "missing" in merged["sft"]
    assert merged["gpu_tests"]["summary"].startswith("8 skipped")
    table = (tmp_path / "gpu-check.md").read_text()
    assert "| minilm (2x8) | fp32 | 1 | childtuning-f | True |" in table
    assert "step_smollm2: the part wrote nothing" in table
    assert json.loads((tmp_path / "gpu-check.json").read_text())["step_minilm"]["rows"] == rows


def test_the_partition_benchmark_counts_a_kernel_per_fragment_against_one_launch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--device", "cpu", "--layers", "1", "--reps", "1", "--modes", "childtuning-d,update-dropout"]
    assert segments_step.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["mode"], r["kernel"]) for r in rows] == [("vanilla", "plain")] + [
        (m, k) for m in ("childtuning-d", "update-dropout") for k in ("per_fragment", "one_launch")
    ]
    fragments = rows[0]["fragments"]
    assert fragments == 25 and all(r["ms"] > 0 for r in rows)
    launches = {(r["mode"], r["kernel"]): r["dispatched_ops"] for r in rows}
    assert launches[("childtuning-d", "per_fragment")] == launches[("update-dropout", "per_fragment")] == 25
    assert launches[("childtuning-d", "one_launch")] == launches[("update-dropout", "one_launch")] == 1
    (tmp_path / "segments.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gpu_check.report(tmp_path)
    table = (tmp_path / "gpu-check.md").read_text()
    assert "| minilm | 25 | update-dropout | one_launch |" in table
