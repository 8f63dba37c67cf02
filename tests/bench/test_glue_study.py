"""The GLUE study's bookkeeping: runs on disk are excluded when it runs again (so it resumes
across days and machines), and the report is made from the run files alone, with the API's
statistics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.glue_study.report import report_main
from bench.glue_study.runner import _experiment, run_time
from bench.glue_study.runs import (
    LOW_RESOURCE,
    SPEC_SET,
    WARMUP_AXIS,
    group_of,
    restrict_axes,
    run_path,
    setting_of,
    variant_of,
    with_model,
)
from service.core.experiments import expand, load_experiment

STUDY = yaml.safe_load(SPEC_SET.read_text())


def write_run(results: Path, task: str, variant: str, seed: int, final: float, **extra: Any) -> None:
    mode = variant.removesuffix("+rdrop")
    run = {
        "task": task, "variant": variant, "seed": seed, "metric": "eval_mcc", "final": final,
        "curve": [[100, final - 0.1], [200, final]], "steps": 200, "seconds": 240.0, "device": "cpu",
        "job_id": f"job-{variant}-{seed}", "layer_kept_fraction": None,
        "values": {"hyperparameters.seed": seed, "childtuning.mode": mode,
                   "hyperparameters.rdrop_alpha": 32.0 if variant.endswith("+rdrop") else 0.0},
        **extra,
    }  # fmt: skip
    path = run_path(results, task, variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))


def test_the_experiment_excludes_the_runs_on_disk(tmp_path: Path) -> None:
    spec = _experiment(STUDY, "glue/cola", [42, 52], tmp_path)
    assert spec is not None
    cells = expand(load_experiment(spec))
    assert len(cells) == 10  # 5 variants x 2 seeds
    assert list(cells[0].values) == [
        "hyperparameters.seed",
        "childtuning.mode",
        "hyperparameters.rdrop_alpha",
    ]
    assert [c.values["hyperparameters.seed"] for c in cells[:5]] == [
        42
    ] * 5  # every variant's first seed first
    assert {c.job.dataset.preset for c in cells} == {"glue/cola"}
    write_run(tmp_path, "glue/cola", "vanilla", 42, 0.3)
    write_run(tmp_path, "glue/cola", "vanilla+rdrop", 52, 0.3)
    left = expand(load_experiment(_experiment(STUDY, "glue/cola", [42, 52], tmp_path)))
    names = {
        (
            c.values["childtuning.mode"],
            c.values["hyperparameters.rdrop_alpha"],
            c.values["hyperparameters.seed"],
        )
        for c in left
    }
    assert len(left) == 8 and ("vanilla", 0.0, 42) not in names and ("vanilla", 32.0, 52) not in names
    for variant in ("vanilla", "vanilla+rdrop", "childtuning-d", "childtuning-f", "update-dropout"):
        for seed in (42, 52):
            write_run(tmp_path, "glue/cola", variant, seed, 0.3)
    assert _experiment(STUDY, "glue/cola", [42, 52], tmp_path) is None  # nothing left to run


def test_the_report_is_made_from_the_run_files(tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "results.md"
    scores = {
        "vanilla": [0.30, 0.32, 0.34],
        "childtuning-d": [0.40, 0.43, 0.46],
        "childtuning-f": [0.31, 0.31, 0.35],
    }
    layers = {"embeddings": 0.1, "layer 0": 0.2, "layer 5": 0.5, "head": 0.9}
    for variant, values in scores.items():
        for seed, value in zip((42, 52, 57), values, strict=True):
            extra: dict[str, Any] = {"layer_kept_fraction": layers} if variant == "childtuning-d" else {}
            if variant == "vanilla" and seed == 57:
                extra["cpu_threads"] = 1  # the other two did not record it
            write_run(results, "glue/cola", variant, seed, value, **extra)
    assert report_main(argparse.Namespace(results=str(results), report=str(report))) == 0
    text = report.read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # vanilla 0.32 ± 0.02; D: diffs 0.10, 0.11, 0.12 -> +0.1100 [+0.0852, +0.1348], better
    assert "0.3200 ± 0.0200" in rows["vanilla"] and "baseline" in rows["vanilla"]
    assert "+0.1100 [+0.0852, +0.1348]" in rows["childtuning-d"] and "| better |" in rows["childtuning-d"]
    assert "| within noise |" in rows["childtuning-f"]
    assert "| CPU (1/? threads), 200 steps, median 4.0 min/run |" in rows["vanilla"]
    assert "| CPU (? threads), 200 steps, median 4.0 min/run |" in rows["childtuning-f"]
    for name in ("cola-curves.png", "cola-seeds.png", "d-mask-layers.png"):
        assert (results / name).read_bytes().startswith(b"\x89PNG") and f"(results/{name})" in text
    verdict = next(line for line in text.splitlines() if line.startswith("- **glue/cola**"))
    assert "vanilla mcc 0.3200 ± 0.0200 over 3 seeds" in verdict
    assert "Better than vanilla: childtuning-d +0.1100 [+0.0852, +0.1348] over 3 seeds" in verdict
    assert "Within noise of vanilla: childtuning-f +0.0033" in verdict and "no variant beats" not in verdict


def test_the_verdicts_say_when_no_variant_beats_vanilla(tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "results.md"
    for variant, values in {
        "vanilla": [0.30, 0.32],
        "childtuning-d": [0.20, 0.21],
        "update-dropout": [0.3],
    }.items():
        for seed, value in zip((42, 52), values, strict=False):
            extra: dict[str, Any] = {"cpu_threads": 1} if variant == "update-dropout" else {}
            if variant == "vanilla" and seed == 52:
                extra["seconds"] = 360.0  # with 240 s: the median of two is 5.0 min
            write_run(results, "glue/sts-b", variant, seed, value, **extra)
    assert report_main(argparse.Namespace(results=str(results), report=str(report))) == 0
    verdict = next(line for line in report.read_text().splitlines() if line.startswith("- **glue/sts-b**"))
    assert "no variant compared so far beats vanilla" in verdict  # update-dropout has 1 seed
    assert "Worse than vanilla: childtuning-d -0.1050 [" in verdict
    assert "Not yet comparable (fewer than 2 shared seeds): update-dropout +0.0000 over 1 seed." in verdict
    text = report.read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| CPU (1 thread), 200 steps, median 4.0 min/run |" in rows["update-dropout"]
    assert "| CPU (? threads), 200 steps, median 5.0 min/run |" in rows["vanilla"]  # unrecorded
    write_run(results, "glue/sts-b", "update-dropout", 52, 0.31)  # now every variant has 2 seeds
    assert report_main(argparse.Namespace(results=str(results), report=str(report))) == 0
    verdict = next(line for line in report.read_text().splitlines() if line.startswith("- **glue/sts-b**"))
    assert "no variant beats vanilla. " in verdict and "Within noise of vanilla: update-dropout" in verdict


def test_run_time_sums_the_attempts_not_the_gap_between_them() -> None:
    """A job stopped with the study after its step-1068 checkpoint (its last step record at 1289)
    and resumed hours later: the time counted is what each attempt ran, not the gap."""
    t0, t1 = 1000.0, 9000.0
    events = [
        {"type": "phase", "phase": "preparing", "time": t0},
        {"type": "started", "time": t0 + 9, "resumed_from": None},
        {"type": "checkpoint", "step": 1068, "time": t0 + 900},
        {"type": "phase", "phase": "preparing", "time": t1},
        {"type": "started", "time": t1 + 70, "resumed_from": 1068},
        {"type": "finished", "status": "succeeded", "time": t1 + 540},
    ]
    metrics = [
        {"kind": "train", "step": 1, "time": t0 + 14},
        {"kind": "train", "step": 1289, "time": t0 + 1100},  # after the checkpoint: redone later
        {"kind": "train", "step": 1069, "time": t1 + 75},
        {"kind": "eval", "step": 1602, "time": t1 + 530},
    ]
    assert run_time(events, metrics) == 1100.0 + 540.0
    # A job of one attempt whose events have no preparing phase: from started to its last record.
    assert run_time(events[1:3], metrics[:1]) == 891.0
    assert run_time([], metrics) == 0.0


def test_gpu_runs_are_their_own_cells_and_rows(tmp_path: Path) -> None:
    gpu_file = run_path(tmp_path, "glue/cola", "vanilla", 42, "cuda")
    assert gpu_file == tmp_path / "runs/cola-gpu/vanilla__seed42.json"
    assert run_path(tmp_path, "glue/cola", "vanilla", 42) == tmp_path / "runs/cola/vanilla__seed42.json"
    results = tmp_path / "results"
    for seed in (42, 52):
        write_run(results, "glue/cola", "vanilla", seed, 0.30)  # CPU runs do not count for the GPU
    spec = _experiment(STUDY, "glue/cola", [42, 52], results, parallel=12, device="cuda")
    assert spec is not None and spec["base"]["resources"]["device"] == "cuda" and spec["max_parallel"] == 12
    assert len(expand(load_experiment(spec))) == 10
    cpu = _experiment(STUDY, "glue/cola", [42, 52], results)
    assert cpu is not None and cpu["base"]["resources"]["device"] == "cpu"
    assert len(expand(load_experiment(cpu))) == 8
    gpu = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "jobs_at_once": 12, "cpu_threads": 1}
    for variant, values in {"vanilla": [0.40, 0.42, 0.44], "childtuning-f": [0.38, 0.39, 0.40]}.items():
        for seed, value in zip((42, 52, 57), values, strict=True):
            path = run_path(results, "glue/cola", variant, seed, "cuda")
            path.parent.mkdir(parents=True, exist_ok=True)
            peak = {"gpu_peak_memory_mib": 1000.0 + seed}
            run = {
                "task": "glue/cola", "variant": variant, "seed": seed, "metric": "eval_mcc", "final": value,
                "curve": [[100, value]], "steps": 1602, "seconds": 90.0, "job_id": f"job-g-{variant}-{seed}",
                "values": {"hyperparameters.seed": seed, "childtuning.mode": variant},
                **gpu, **peak,
            }  # fmt: skip
            path.write_text(json.dumps(run))
    left = _experiment(STUDY, "glue/cola", [42, 52], results, device="cuda")
    assert left is not None and len(expand(load_experiment(left))) == 6
    assert "baseline" not in left  # every GPU vanilla run is on disk: the API would refuse it
    more = _experiment(STUDY, "glue/cola", [42, 63], results, device="cuda")  # vanilla 63 is left
    assert more is not None and more["baseline"]
    report = tmp_path / "results.md"
    assert report_main(argparse.Namespace(results=str(results), report=str(report))) == 0
    text = report.read_text()
    assert "## glue/cola: dev mcc at the final step" in text
    assert "## glue/cola (GPU): dev mcc at the final step" in text
    gpu_part = text.split("## glue/cola (GPU)")[1]
    rows = {line.split(" | ")[0].strip("| "): line for line in gpu_part.splitlines() if line.startswith("| ")}
    # GPU vanilla 0.42 ± 0.02, compared with the GPU F runs only (not the CPU vanilla at 0.30)
    assert "0.4200 ± 0.0200" in rows["vanilla"] and "| 3 | 42,52,57 |" in rows["vanilla"]
    assert "-0.0300 [" in rows["childtuning-f"]
    scale = "| GPU (NVIDIA H100 80GB HBM3, 12 jobs at once, peak 1.0 GiB), 1602 steps, median 1.5 min/run |"
    assert scale in rows["vanilla"]
    assert (results / "cola-gpu-curves.png").read_bytes().startswith(b"\x89PNG")
    assert "- **glue/cola (GPU)**" in text and "- **glue/cola**" in text
    cpu_part = text.split("## glue/cola (GPU)")[0].split("## glue/cola:")[1]
    assert "| vanilla | 2 | 42,52 | 0.3000 ± 0.0000 |" in cpu_part and "GPU" not in cpu_part


class ScriptedApi:
    """The API's answers to the runner, one scripted experiment view per poll (the last repeats).

    The runner's polling is the thing under test here; the service's own experiments are tested
    on real Redis, API and worker in tests/service/test_experiments*.py.
    """

    def __init__(self, views: dict[str, list[list[str]]]) -> None:
        self.views = views
        self.polls: dict[str, int] = {}

    def get_experiment(self, exp_id: str) -> dict[str, Any]:
        n = self.polls[exp_id] = self.polls.get(exp_id, 0) + 1
        statuses = self.views[exp_id][min(n, len(self.views[exp_id])) - 1]
        jobs = [
            {"id": f"{exp_id}-{i}", "status": st, "step": 0, "total_steps": 10,
             "values": {"childtuning.mode": "vanilla", "hyperparameters.seed": 42 + i}}
            for i, st in enumerate(statuses)
        ]  # fmt: skip
        done = all(st in ("succeeded", "failed", "cancelled") for st in statuses)
        return {"id": exp_id, "jobs": jobs, "counts": {}, "status": "cancelled" if done else "running"}

    def get_job(self, job_id: str) -> dict[str, Any]:
        return {"id": job_id, "status": "cancelled", "error": "cancelled by the test"}


def test_sequential_submits_the_next_task_when_nothing_waits(tmp_path: Path) -> None:
    from bench.glue_study.runner import _follow

    api = ScriptedApi(
        {
            "exp-a": [
                ["running", "queued"],
                ["running", "queued"],
                ["running", "running"],
                ["cancelled"] * 2,
            ],
            "exp-b": [["running", "queued"], ["cancelled"] * 2],
        }
    )
    submitted: list[tuple[str, int]] = []

    def submit_next() -> tuple[str, str] | None:
        if submitted:
            return None
        submitted.append(("glue/rte", api.polls["exp-a"]))
        return "glue/rte", "exp-b"

    freed: list[str] = []
    assert (
        _follow(api, {"glue/mrpc": "exp-a"}, tmp_path, submit_next, poll_s=0, on_saved=freed.append) is True
    )  # type: ignore[arg-type]
    assert submitted == [("glue/rte", 3)]  # not while a job of exp-a was queued
    assert freed == []  # cancelled runs are not saved, so their job folders are left alone
    assert api.polls["exp-b"] >= 2
    late = ScriptedApi({"exp-c": [["running", "queued"]]})  # never finishes
    assert _follow(late, {"glue/cola": "exp-c"}, tmp_path, None, deadline=0.0, poll_s=0) is False  # type: ignore[arg-type]
    assert late.polls["exp-c"] == 1


LOW = yaml.safe_load(LOW_RESOURCE.read_text())


def write_low_run(
    results: Path, task: str, variant: str, seed: int, lr: float, final: float, share: float, model: str = ""
) -> None:
    """A low-resource run file as the runner saves it (the runs-1k folder, a setting, a spread;
    ``model``: the tag of `run --model`)."""
    setting = setting_of({"hyperparameters.learning_rate": lr}, LOW["setting_axes"])
    run = {
        "task": task, "scope": "1k", "setting": setting, "variant": variant, "seed": seed,
        "metric": "eval_accuracy", "final": final, "curve": [[62, final], [186, final]], "steps": 186,
        "seconds": 480.0, "device": "cpu", "cpu_threads": 1, "job_id": f"job-{variant}-{lr}-{seed}",
        "recipe": "childtuning-official", "dataset": {"preset": task, "max_train_examples": 1000},
        "final_metrics": {"eval_accuracy": final, "eval_top_class_share": share},
        "values": {"hyperparameters.seed": seed, "hyperparameters.learning_rate": lr},
        "model_tag": model or None,
    }  # fmt: skip
    path = run_path(results, task, variant, seed, runs=LOW["runs"], setting=setting, model=model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))


def test_the_low_resource_spec_set_runs_the_official_recipe_on_a_fixed_subset(tmp_path: Path) -> None:
    variants = ["vanilla", "childtuning-d+warmup0.1"]
    spec = _experiment(LOW, "glue/rte", [42, 52], tmp_path, variants=variants)
    assert spec is not None and spec["name"] == "GLUE study: glue/rte-1k"
    cells = expand(load_experiment(spec))
    assert len(cells) == 12  # 2 variants x 3 learning rates x 2 seeds
    for cell in cells:
        assert cell.job.dataset.max_train_examples == 1000 and cell.job.dataset.subset_seed == 7
        assert (
            cell.job.recipe == "childtuning-official" and cell.job.hyperparameters.optimizer == "adamw-hf2021"
        )
        assert cell.job.hyperparameters.warmup_ratio == 0.1  # vanilla's official, and the ablation's
        assert variant_of(cell.values, "childtuning-official") in variants
    assert {c.job.childtuning.mode for c in cells} == {"vanilla", "childtuning-d"}
    assert {c.job.hyperparameters.learning_rate for c in cells} == {4e-5, 1e-4, 2e-4}
    # D and F at their official warmup (none) are plain childtuning-d and childtuning-f
    assert variant_of({"childtuning.mode": "childtuning-d", WARMUP_AXIS: 0.0}, "childtuning-official") == (
        "childtuning-d"
    )
    assert variant_of({"childtuning.mode": "vanilla", WARMUP_AXIS: 0.0}, "childtuning-official") == (
        "vanilla+warmup0"
    )
    write_low_run(tmp_path, "glue/rte", "vanilla", 42, 1e-4, 0.6, 0.6)
    path = tmp_path / "runs-1k/rte-lr1e-4/vanilla__seed42.json"
    assert path.is_file()
    narrowed = restrict_axes(LOW, {"hyperparameters.learning_rate": [1e-4]})
    left = expand(load_experiment(_experiment(narrowed, "glue/rte", [42, 52], tmp_path, variants=variants)))
    assert len(left) == 3  # the vanilla run at seed 42 on disk; D+warmup at 42 and 52, vanilla at 52
    assert {c.job.hyperparameters.learning_rate for c in left} == {1e-4}
    with pytest.raises(ValueError, match=r"hyperparameters.learning_rate: \[0.003\] not among"):
        restrict_axes(LOW, {"hyperparameters.learning_rate": [3e-3]})
    with pytest.raises(ValueError, match="no such axis"):
        restrict_axes(LOW, {"hyperparameters.epochs": [3]})


def test_the_low_resource_report_has_the_pilot_failures_and_detailed_settings(tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "results.md"
    # lr 1e-4: 3 seeds, vanilla collapses once (a constant prediction), D never
    for seed, (v, d) in zip((42, 52, 57), [(0.60, 0.62), (0.53, 0.61), (0.62, 0.63)], strict=True):
        write_low_run(results, "glue/rte", "vanilla", seed, 1e-4, v, 1.0 if v == 0.53 else 0.6)
        write_low_run(results, "glue/rte", "childtuning-d", seed, 1e-4, d, 0.7)
    # lr 4e-5: the pilot's 2 seeds only
    for seed in (42, 52):
        write_low_run(results, "glue/rte", "vanilla", seed, 4e-5, 0.58, 0.995)
    assert report_main(argparse.Namespace(results=str(results), report=str(report))) == 0
    text = report.read_text()
    assert "# Low-resource study: 1,000 training examples" in text and "subset_seed: 7" in text
    chosen = [c["setting"] for c in LOW["chosen"]]
    assert f"The 10 seeds went to **{chosen[0]}**: " in text and f"; **{chosen[1]}**: " in text
    pilot = [line for line in text.split("## Pilot")[1].splitlines() if line.startswith("| glue/rte-1k")]
    assert pilot == [
        "| glue/rte-1k | lr 4e-5 | accuracy | 0.5800 ± 0.0000 (failed 2/2) | - |",
        "| glue/rte-1k | lr 1e-4 | accuracy | 0.5833 ± 0.0473 (failed 1/3) | 0.6200 ± 0.0100 (failed 0/3) |",
    ]
    # only the setting with 3+ seeds has its own table, plots and verdict
    assert "## glue/rte-1k, lr 1e-4: dev accuracy at the final step" in text
    assert "## glue/rte-1k, lr 4e-5" not in text
    part = text.split("## glue/rte-1k, lr 1e-4")[1]
    rows = {line.split(" | ")[0].strip("| "): line for line in part.splitlines() if line.startswith("| ")}
    assert "| 1/3 | CPU (1 thread), 186 steps, median 8.0 min/run |" in rows["vanilla"]
    assert "| 0/3 |" in rows["childtuning-d"]
    assert (results / "1k-rte-lr1e-4-curves.png").read_bytes().startswith(b"\x89PNG")
    verdict = next(line for line in text.splitlines() if line.startswith("- **glue/rte-1k, lr 1e-4**"))
    assert "(1,000 examples, childtuning-official; vanilla accuracy 0.5833 ± 0.0473 over 3 seeds)" in verdict
    assert "Failed runs (a constant prediction at the end): vanilla 1/3, childtuning-d 0/3." in verdict
    assert "low-resource: 8 runs on disk over 2 task/lr settings, 1 of them with 3+ seeds" in text
    assert "10 seeds of 4 variants" in text  # counted from the spec set: its axes less its excludes
    assert "Tables marked **[" not in text  # no other model's runs, no note about one


def test_another_model_runs_as_rows_and_files_of_its_own(tmp_path: Path) -> None:
    smol = with_model(LOW, "smollm2-135m")
    assert with_model(LOW, "minilm-l6") is LOW and with_model(LOW, None) is LOW
    write_low_run(tmp_path, "glue/cola", "vanilla", 42, 1e-4, 0.3, 0.7)  # a MiniLM run
    spec = _experiment(smol, "glue/cola", [42], tmp_path, variants=["vanilla"])
    assert spec is not None and spec["base"]["model"] == "smollm2-135m"
    cells = expand(load_experiment(spec))
    assert len(cells) == 3 and {c.job.model for c in cells} == {"smollm2-135m"}  # MiniLM's run is not its
    path = run_path(
        tmp_path, "glue/cola", "vanilla", 42, runs="runs-1k", setting="lr 1e-4", model="smollm2-135m"
    )
    assert path == tmp_path / "runs-1k/cola-lr1e-4-smollm2-135m/vanilla__seed42.json"
    run = {"task": "glue/cola", "scope": "1k", "setting": "lr 1e-4", "model_tag": "smollm2-135m"}
    assert group_of(run) == "glue/cola-1k, lr 1e-4 [smollm2-135m]"
    assert group_of({**run, "device": "cuda"}) == "glue/cola-1k, lr 1e-4 [smollm2-135m] (GPU)"
    # In the report: a pilot row and (at 3 seeds) a table of its own, with what is known of the model
    for seed in (42, 52, 57):
        write_low_run(tmp_path, "glue/cola", "vanilla", seed, 1e-4, 0.2, 0.7, model="smollm2-135m")
    report = tmp_path / "results.md"
    assert report_main(argparse.Namespace(results=str(tmp_path), report=str(report))) == 0
    text = report.read_text()
    assert "Tables marked **[smollm2-135m]**: SmolLM2-135M-Instruct" in text and "2 trillion tokens" in text
    pilot = [line for line in text.split("## Pilot")[1].splitlines() if line.startswith("| glue/cola-1k")]
    assert pilot == [
        "| glue/cola-1k | lr 1e-4 | accuracy | 0.3000 (failed 0/1) |",
        "| glue/cola-1k [smollm2-135m] | lr 1e-4 | accuracy | 0.2000 ± 0.0000 (failed 0/3) |",
    ]
    assert "## glue/cola-1k, lr 1e-4 [smollm2-135m]: dev accuracy at the final step" in text


def test_free_weights_deletes_models_and_checkpoints_and_keeps_the_records(tmp_path: Path) -> None:
    from bench.glue_study.runner import free_weights

    job = tmp_path / "job-1"
    for name, size in [
        ("model/model.safetensors", 1000), ("best/model.safetensors", 1000), ("best.tmp/x.bin", 10),
        ("checkpoints/step-00000062/mp_rank_00_model_states.pt", 500),
        ("metrics.jsonl", 7), ("events.jsonl", 7), ("predictions.json", 3), ("masks/summary.json", 5),
    ]:  # fmt: skip
        (job / name).parent.mkdir(parents=True, exist_ok=True)
        (job / name).write_bytes(b"x" * size)
    assert free_weights(job) == 2510
    assert sorted(p.name for p in job.iterdir()) == [
        "events.jsonl",
        "masks",
        "metrics.jsonl",
        "predictions.json",
    ]
    assert free_weights(job) == 0  # again: nothing left to free
