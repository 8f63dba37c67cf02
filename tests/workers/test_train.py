"""The training program end to end: `childtune train` launching real DeepSpeed ranks (gloo, CPU).

Each test runs real jobs on small slices of the GLUE data with a tiny random BERT (or the
real MiniLM preset), then reads what the job left in its directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from childtuning import load_full_mask, mask_overlap
from service.core.jobdir import CHECKPOINT_MARKER as MARKER
from service.core.jobdir import read_jsonl
from tests.workers.tiny import write_tiny_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EXIT_INTERRUPTED = 75


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {
        "plain": write_tiny_model(base / "tiny", dropout=0.0),
        "dropout": write_tiny_model(base / "tiny-dropout", dropout=0.1),
    }


def make_spec(model: Path, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": str(model),
        "dataset": {"preset": "glue/rte", "max_train_examples": 64, "max_eval_examples": 24},
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {
            "max_steps": 8,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_seq_length": 48,
            "eval_every": 4,
            "save_every": 4,
            "seed": 7,
        },
        "resources": {"num_ranks": 2, "zero_stage": 2, "device": "cpu"},
    }
    for key, value in over.items():
        if isinstance(value, dict) and key != "dataset":  # a dataset is replaced whole
            spec[key] = {**spec.get(key, {}), **value}
        else:
            spec[key] = value
    return spec


def env(device: str = "cpu") -> dict[str, str]:
    """The job's environment: the repo first on PYTHONPATH, then the caller's (a GPU machine's
    carried packages); DeepSpeed on the CPU accelerator unless the job is a GPU one."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    out = {**os.environ, "PYTHONPATH": path, "CI": "true"}
    if device == "cpu":
        out["DS_ACCELERATOR"] = "cpu"
    else:
        out.pop("DS_ACCELERATOR", None)
    return out


def train_argv(job_dir: Path, spec: dict[str, Any] | None) -> list[str]:
    argv = [sys.executable, "-m", "service.cli", "train", "--job-dir", str(job_dir)]
    if spec is not None:
        path = job_dir.parent / f"{job_dir.name}.spec.json"
        path.write_text(json.dumps(spec))
        argv.insert(4, str(path))
    return argv


def run_job(
    job_dir: Path, spec: dict[str, Any] | None, timeout: float = 400, device: str = "cpu"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_argv(job_dir, spec), env=env(device), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def describe(proc: subprocess.CompletedProcess[str], job_dir: Path) -> str:
    log = (job_dir / "launcher.log").read_text()[-4000:] if (job_dir / "launcher.log").exists() else ""
    return f"rc={proc.returncode}\nstderr:\n{proc.stderr[-3000:]}\nlauncher.log:\n{log}"


def tensorboard_tags(log_dir: Path) -> set[str]:
    """Scalar tags in TensorBoard event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    tags: set[str] = set()
    for path in log_dir.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = np.frombuffer(data[pos : pos + 8], dtype="<u8")
            body = data[pos + 12 : pos + 12 + int(length)]
            pos += 12 + int(length) + 4
            event = Event.FromString(body)
            tags.update(v.tag for v in event.summary.value)
    return tags


def predictions_of(model_dir: Path, spec: dict[str, Any]) -> np.ndarray:
    """The exported model's outputs on the job's evaluation examples, computed afresh."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from service.core.contract import DatasetSpec
    from workers.train.data import load_splits, tokenize

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    splits = load_splits(DatasetSpec.model_validate(spec["dataset"]))
    data = tokenize(
        splits.eval, tokenizer, spec["hyperparameters"]["max_seq_length"], task_type=splits.info.task_type
    )
    with torch.no_grad():
        logits = model(**{k: v for k, v in data.tensors().items() if k != "labels"}).logits
    return logits[:, 0].numpy() if splits.info.is_regression else logits.numpy()


# (stage, mode, model, dataset/hyperparameter overrides): every mode at ZeRO-2 and ZeRO-3, with
# gradient accumulation, a regression task and R-Drop among them.
CASES = [
    (2, "vanilla", "plain", {"hyperparameters": {"gradient_accumulation_steps": 2}}),
    (2, "childtuning-d", "plain", {}),
    (2, "childtuning-f", "plain", {"hyperparameters": {"optimizer": "adamw-hf2021"}}),
    (2, "update-dropout", "plain", {}),
    (
        3,
        "vanilla",
        "plain",
        {"dataset": {"preset": "glue/mrpc", "max_train_examples": 64, "max_eval_examples": 24}},
    ),
    (3, "childtuning-d", "dropout", {}),
    (3, "childtuning-f", "dropout", {"hyperparameters": {"rdrop_alpha": 1.0}}),
    (
        3,
        "update-dropout",
        "plain",
        {"dataset": {"preset": "glue/sts-b", "max_train_examples": 64, "max_eval_examples": 24}},
    ),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> dict[str, Any]:
    """Run every case once; tests read the job directories."""
    base = tmp_path_factory.mktemp("jobs")
    out: dict[str, Any] = {}
    for stage, mode, model, over in CASES:
        spec = make_spec(models[model], **over)
        spec["childtuning"] = {**spec["childtuning"], "mode": mode}
        spec["resources"] = {**spec["resources"], "zero_stage": stage}
        job_dir = base / f"s{stage}-{mode}"
        out[f"s{stage}-{mode}"] = (job_dir, spec, run_job(job_dir, spec))
    return out


@pytest.mark.parametrize(("stage", "mode"), [(c[0], c[1]) for c in CASES])
def test_job_finishes_with_contiguous_metrics_and_a_loadable_model(
    finished: dict[str, Any], stage: int, mode: str
) -> None:
    job_dir, spec, proc = finished[f"s{stage}-{mode}"]
    assert proc.returncode == 0, describe(proc, job_dir)
    status = json.loads((job_dir / "status.json").read_text())
    assert status["status"] == "succeeded" and status["step"] == 8 and status["error"] is None

    metrics = records(job_dir / "metrics.jsonl")
    train = [r for r in metrics if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    for r in train:
        assert r["total_steps"] == 8 and np.isfinite(r["loss"]) and r["lr"] >= 0
        assert r["samples_per_second"] > 0 and r["tokens_per_second"] > 0
        assert {"epoch", "grad_norm", "time"} <= r.keys()
    evals = [r for r in metrics if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8]  # eval_every 4, and the last step
    main = evals[0]["main_metric"]
    expected_main = {
        "glue/rte": "eval_accuracy",
        "glue/mrpc": "eval_f1",
        "glue/sts-b": "eval_pearson",
    }[spec["dataset"]["preset"]]
    assert main == expected_main and all(main in r and "eval_loss" in r for r in evals)

    events = records(job_dir / "events.jsonl")
    types = [e["type"] for e in events]
    assert types[-1] == "finished" and events[-1]["status"] == "succeeded"
    phases = [e["phase"] for e in events if e["type"] == "phase"]
    assert ("fisher" in phases) == (mode == "childtuning-d")
    # every save_every (4) steps, the last step included
    assert [e["name"] for e in events if e["type"] == "checkpoint"] == ["step-00000004", "step-00000008"]
    assert (job_dir / "checkpoints" / "step-00000008" / MARKER).is_file()
    # after the final evaluation the job saves: no training phase after it
    last_eval = max(i for i, e in enumerate(events) if e["type"] == "phase" and e["phase"] == "evaluating")
    assert [e["phase"] for e in events[last_eval:] if e["type"] == "phase"] == ["evaluating", "saving"]
    assert {"train/loss", "train/lr", f"eval/{main.removeprefix('eval_')}"} <= tensorboard_tags(
        job_dir / "tensorboard"
    )

    # model/ is a plain Hugging Face folder giving the trained model's predictions
    saved = json.loads((job_dir / "predictions.json").read_text())
    assert saved["step"] == 8
    again = predictions_of(job_dir / "model", spec)
    np.testing.assert_allclose(again, np.asarray(saved["predictions"]), rtol=1e-4, atol=1e-5)
    # the final eval record says how varied those predictions are (a collapsed run shows there)
    final_preds = np.asarray(saved["predictions"])
    if spec["dataset"]["preset"] == "glue/sts-b":
        assert evals[-1]["eval_prediction_std_ratio"] >= 0 and "eval_top_class_share" not in evals[-1]
    else:
        shares = np.bincount(final_preds.argmax(-1)) / len(final_preds)
        assert evals[-1]["eval_top_class_share"] == pytest.approx(shares.max())
    card = json.loads((job_dir / "model" / "childtune.json").read_text())
    assert card["step"] == 8 and card["spec"]["childtuning"]["mode"] == mode
    best = json.loads((job_dir / "best" / "childtune.json").read_text())
    assert best["metrics"][main] == max(r[main] for r in evals)

    summary = json.loads((job_dir / "masks" / "summary.json").read_text())
    assert summary["mode"] == mode and summary["world_size"] == 2 and summary["zero_stage"] == stage
    if mode == "childtuning-d":
        assert summary["num_kept"] == round(0.3 * summary["num_elements"])


def test_the_2021_adamw_rule_trains_under_zero_with_the_fused_hook(finished: dict[str, Any]) -> None:
    job_dir, _, proc = finished["s2-childtuning-f"]
    assert proc.returncode == 0, describe(proc, job_dir)
    card = json.loads((job_dir / "model" / "childtune.json").read_text())
    assert card["spec"]["hyperparameters"]["optimizer"] == "adamw-hf2021"
    # (tests/childtuning/test_hf2021.py checks the rule itself, fused and not, to 1e-6)


def test_rdrop_and_regression_ran(finished: dict[str, Any]) -> None:
    _, spec, _ = finished["s3-childtuning-f"]
    assert spec["hyperparameters"]["rdrop_alpha"] == 1.0
    job_dir, _, proc = finished["s3-update-dropout"]
    assert proc.returncode == 0, describe(proc, job_dir)
    config = json.loads((job_dir / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config.get("num_labels", 1) == 1
    assert len(config["id2label"]) == 1


def test_d_mask_is_the_same_bits_at_one_and_two_ranks(
    finished: dict[str, Any], tmp_path: Path, models: dict[str, Path]
) -> None:
    two_dir, spec, proc = finished["s2-childtuning-d"]
    assert proc.returncode == 0, describe(proc, two_dir)
    one = {**spec, "resources": {**spec["resources"], "num_ranks": 1}}
    one_dir = tmp_path / "one-rank"
    proc = run_job(one_dir, one)
    assert proc.returncode == 0, describe(proc, one_dir)
    a, b = load_full_mask(one_dir / "masks"), load_full_mask(two_dir / "masks")
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
    shards = json.loads((two_dir / "masks" / "summary.json").read_text())["shards"]
    assert len(shards) == 2  # sharded per rank at ZeRO-2


def _wait_for_step(job_dir: Path, step: int, proc: subprocess.Popen[str], timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            f"the job ended early (rc={proc.returncode}): {proc.stderr and proc.stderr.read()}"
        )
        path = job_dir / "metrics.jsonl"
        if path.is_file():
            # the job is still writing: read_jsonl skips a line caught half-written
            steps = [r["step"] for r in read_jsonl(path) if r["kind"] == "train"]
            if steps and steps[-1] >= step:
                return steps[-1]
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def _start(job_dir: Path, spec: dict[str, Any] | None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        train_argv(job_dir, spec),
        env=env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the test signals the whole group, as a worker does
    )


def _rank_pids(job_dir: Path) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "workers.train" in cmd and str(job_dir) in cmd:
                out.append(int(entry.name))
    return out


def test_sigterm_then_sigkill_then_resume(tmp_path: Path, models: dict[str, Path]) -> None:
    total = 160
    spec = make_spec(
        models["plain"],
        childtuning={"mode": "childtuning-f", "reserve_p": 0.4},
        dataset={"preset": "glue/rte", "max_train_examples": 256, "max_eval_examples": 16},
        hyperparameters={"max_steps": total, "save_every": 20, "eval_every": 80, "max_seq_length": 96},
    )
    job_dir = tmp_path / "job"

    # SIGTERM: the job stops at a step boundary, writes nothing half-done, exits 75.
    proc = _start(job_dir, spec)
    _wait_for_step(job_dir, 25, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    status = json.loads((job_dir / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert not list(job_dir.rglob("*.tmp")), "a temporary file was left behind"
    assert records(job_dir / "events.jsonl")[-1]["status"] == "interrupted"
    assert not _rank_pids(job_dir)

    # SIGKILL to the whole group mid-training: nothing can be saved.
    proc = _start(job_dir, None)
    killed_at = _wait_for_step(job_dir, 70, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _rank_pids(job_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _rank_pids(job_dir)
    assert killed_at < total

    # Started again: it resumes from the latest checkpoint and finishes.
    proc2 = run_job(job_dir, None)
    assert proc2.returncode == 0, describe(proc2, job_dir)
    train_steps = [r["step"] for r in records(job_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert train_steps == list(range(1, total + 1)), "a step is missing or appears twice"
    eval_steps = [r["step"] for r in records(job_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert eval_steps == [32, 64, 80, 96, 128, 160]  # each epoch's end (32 steps) and every 80
    events = records(job_dir / "events.jsonl")
    resumed = [e["from_step"] for e in events if e["type"] == "resumed"]
    assert len(resumed) == 2 and resumed[0] == 20 and resumed[1] >= 60 and resumed[1] % 20 == 0
    assert json.loads((job_dir / "status.json").read_text())["step"] == total
    kept = sorted(p.name for p in (job_dir / "checkpoints").iterdir() if p.is_dir())
    assert len(kept) == 2  # keep_checkpoints defaults to 2

    # A finished job started again does nothing and succeeds.
    again = run_job(job_dir, None)
    assert again.returncode == 0
    assert [r["step"] for r in records(job_dir / "metrics.jsonl") if r["kind"] == "train"] == train_steps


def test_malformed_row_fails_before_training(tmp_path: Path, models: dict[str, Path]) -> None:
    train = tmp_path / "train.csv"
    rows = ["text,label"] + [f"sentence number {i},{i % 2}" for i in range(20)]
    rows[13] = "a broken row,maybe"  # line 14 of the file
    train.write_text("\n".join(rows) + "\n")
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nfine,0\nalso fine,1\n")
    spec = make_spec(
        models["plain"],
        dataset={
            "train_file": str(train),
            "eval_file": str(dev),
            "text_column": "text",
            "label_column": "label",
            "task_type": "regression",
        },
    )
    job_dir = tmp_path / "job"
    proc = run_job(job_dir, spec)
    assert proc.returncode == 1, describe(proc, job_dir)
    error = json.loads((job_dir / "status.json").read_text())["error"]
    assert str(train) in error and "line 14" in error and "'maybe'" in error
    assert "failed:" in proc.stderr and "line 14" in proc.stderr
    phases = [e["phase"] for e in records(job_dir / "events.jsonl") if e["type"] == "phase"]
    assert "training" not in phases
    assert not (job_dir / "metrics.jsonl").read_text().strip()


def test_non_finite_loss_fails_naming_the_step(tmp_path: Path, models: dict[str, Path]) -> None:
    train = tmp_path / "train.jsonl"
    # A finite label whose square overflows float32: the first step's loss is infinite.
    train.write_text("".join(json.dumps({"a": f"text {i}", "y": 1e30}) + "\n" for i in range(16)))
    spec = make_spec(
        models["plain"],
        dataset={
            "train_file": str(train),
            "eval_file": str(train),
            "text_column": "a",
            "label_column": "y",
            "task_type": "regression",
        },
        resources={"num_ranks": 1, "zero_stage": 0, "device": "cpu"},
        childtuning={"mode": "vanilla"},
    )
    job_dir = tmp_path / "job"
    proc = run_job(job_dir, spec)
    assert proc.returncode == 1, describe(proc, job_dir)
    error = json.loads((job_dir / "status.json").read_text())["error"]
    assert "non-finite loss" in error and "at step 1" in error
    last = records(job_dir / "events.jsonl")[-2]
    assert last["type"] == "error" and last["step"] == 1


def test_minilm_preset_fine_tunes_offline(tmp_path: Path) -> None:
    spec = {
        "model": "minilm-l6",
        "dataset": {"preset": "glue/rte", "max_train_examples": 24, "max_eval_examples": 8},
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3, "fisher_num_batches": 2},
        "hyperparameters": {"max_steps": 3, "batch_size": 8, "max_seq_length": 64},
        "resources": {"num_ranks": 1, "zero_stage": 2, "device": "cpu"},
    }
    job_dir = tmp_path / "job"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "train", str(path), "--job-dir", str(job_dir)],
        env={**env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, describe(proc, job_dir)
    config = json.loads((job_dir / "model" / "config.json").read_text())
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 6
    assert config["id2label"] == {"0": "entailment", "1": "not_entailment"}
    summary = json.loads((job_dir / "masks" / "summary.json").read_text())
    assert summary["num_fisher_batches"] == 2
    assert summary["num_elements"] > 10_000_000  # the encoder layers of MiniLM
    train = [r for r in records(job_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    started = next(e for e in records(job_dir / "events.jsonl") if e["type"] == "started")
    assert started["device"] == "cpu" and started["gpu"] is None and started["cpu_threads"] >= 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_bf16_childtuning_d_job_trains_scores_its_mask_and_exports(
    tmp_path: Path, models: dict[str, Path], device: str
) -> None:
    """bf16 under DeepSpeed (bf16 weights, fp32 master copy), on 2 CPU ranks over gloo or one GPU:
    the job trains, its Fisher mask keeps nearly the elements fp32's keeps (bf16's 8-bit mantissa
    swaps near-ties only), and the exported fp32 model gives the job's own predictions."""
    ranks = 2 if device == "cpu" else 1
    spec = make_spec(
        models["plain"],
        childtuning={"strict_child": True},
        resources={"num_ranks": ranks, "zero_stage": 2, "precision": "bf16", "device": device},
    )
    job_dir = tmp_path / "job"
    proc = run_job(job_dir, spec, device=device)
    assert proc.returncode == 0, describe(proc, job_dir)
    started = next(e for e in records(job_dir / "events.jsonl") if e["type"] == "started")
    assert started["device"] == device and started["precision"] == "bf16" and started["world_size"] == ranks
    train = [r for r in records(job_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9)) and all(np.isfinite(r["loss"]) for r in train)
    if device == "cuda":
        assert "NVIDIA" in started["gpu"] or "AMD" in started["gpu"]  # the card's name, for the record
        assert all(r["gpu_peak_memory_mib"] > 0 for r in train)
    fp32 = {**spec, "resources": {**spec["resources"], "precision": "fp32"}}
    reference = tmp_path / "fp32"
    assert run_job(reference, fp32, device=device).returncode == 0, describe(proc, reference)
    overlap = mask_overlap(load_full_mask(reference / "masks"), load_full_mask(job_dir / "masks"))
    assert overlap["kept"] == overlap["other_kept"], overlap  # k = round(p * N) in both
    assert overlap["overlap"] >= 0.9, f"bf16 and fp32 masks share only: {overlap}"
    # The export is the fp32 master copy, saved as fp32, and only the child moved from the base
    # as the job's master copy began (the base rounded to bf16).
    assert json.loads((job_dir / "model" / "config.json").read_text())["dtype"] == "float32"
    audit = json.loads((job_dir / "masks" / "audit.json").read_text())
    assert audit["base_rounded_to"] == "bf16" and audit["child_only"], audit["changed_outside"]
    from childtuning.delta import apply_delta, load_weights

    rebuilt, tuned = apply_delta(models["plain"], job_dir / "delta"), load_weights(job_dir / "model")
    assert all(torch.equal(rebuilt[k], tuned[k]) for k in tuned)  # bit-exact from the fp32 base
    again = predictions_of(job_dir / "model", spec)
    saved = np.asarray(json.loads((job_dir / "predictions.json").read_text())["predictions"])
    np.testing.assert_allclose(again, saved, rtol=2e-2, atol=2e-2)  # bf16 forward vs fp32 export


def test_fp16_on_cpu_is_refused_naming_the_field(tmp_path: Path, models: dict[str, Path]) -> None:
    spec = make_spec(
        models["plain"], resources={"num_ranks": 1, "zero_stage": 2, "precision": "fp16", "device": "cpu"}
    )
    job_dir = tmp_path / "job"
    proc = run_job(job_dir, spec)
    assert proc.returncode == 1, describe(proc, job_dir)
    error = json.loads((job_dir / "status.json").read_text())["error"]
    assert "resources.precision: fp16 needs a GPU" in error and "use bf16 or fp32" in error


def test_early_stopping_ends_training_at_the_patience_and_that_step_is_final(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    """A learning rate too small to change a prediction: the first evaluation stays the best, so
    with patience 2 training stops after the third step's evaluation, and that step is final."""
    job = tmp_path / "job"
    spec = make_spec(
        models["plain"],
        childtuning={"mode": "vanilla"},
        hyperparameters={
            "learning_rate": 1e-9,
            "eval_every": 1,
            "save_every": 100,
            "early_stopping_patience": 2,
        },
        resources={"num_ranks": 1, "zero_stage": 0, "device": "cpu"},
    )
    proc = run_job(job, spec)
    assert proc.returncode == 0, describe(proc, job)
    metrics = records(job / "metrics.jsonl")
    assert [r["step"] for r in metrics if r["kind"] == "train"] == [1, 2, 3]
    evals = [r for r in metrics if r["kind"] == "eval"]
    assert [(r["step"], r["is_best"], r["is_final"]) for r in evals] == [
        (1, True, False),
        (2, False, False),
        (3, False, True),
    ]
    events = records(job / "events.jsonl")
    stopped = [e for e in events if e["type"] == "early_stopped"]
    assert [(e["step"], e["patience"], e["best_step"]) for e in stopped] == [(3, 2, 1)]
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "succeeded"
    status = json.loads((job / "status.json").read_text())
    assert status["status"] == "succeeded" and status["final"]["step"] == 3 and status["best"]["step"] == 1
    assert json.loads((job / "model" / "childtune.json").read_text())["step"] == 3
    assert (job / "checkpoints" / "step-00000003" / MARKER).exists()


def test_eval_at_start_is_a_reference_never_best_nor_counted_for_early_stopping(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    """The early-stopping job above with ``eval_at_start``: its step-0 evaluation scores what step
    1's does (the learning rate changes no prediction), yet step 1 is still the first best and
    training still stops at step 3: the reference counts neither as a best nor for the patience."""
    job = tmp_path / "job"
    spec = make_spec(
        models["plain"],
        childtuning={"mode": "vanilla"},
        hyperparameters={
            "learning_rate": 1e-9,
            "eval_every": 1,
            "save_every": 100,
            "early_stopping_patience": 2,
            "eval_at_start": True,
        },
        resources={"num_ranks": 1, "zero_stage": 0, "device": "cpu"},
    )
    proc = run_job(job, spec)
    assert proc.returncode == 0, describe(proc, job)
    metrics = records(job / "metrics.jsonl")
    assert [r["step"] for r in metrics if r["kind"] == "train"] == [1, 2, 3]
    evals = [r for r in metrics if r["kind"] == "eval"]
    assert [(r["step"], r["is_best"], r["is_final"], r.get("at_start", False)) for r in evals] == [
        (0, False, False, True),
        (1, True, False, False),
        (2, False, False, False),
        (3, False, True, False),
    ]
    assert metrics[0]["kind"] == "eval" and metrics[0]["epoch"] == 0  # before any training record
    assert evals[0]["eval_accuracy"] == evals[1]["eval_accuracy"]
    status = json.loads((job / "status.json").read_text())
    assert status["best"]["step"] == 1 and status["final"]["step"] == 3
    assert json.loads((job / "best" / "childtune.json").read_text())["step"] == 1
    assert json.loads((job / "predictions.json").read_text())["step"] == 3
    events = records(job / "events.jsonl")
    assert [(e["step"], e["best_step"]) for e in events if e["type"] == "early_stopped"] == [(3, 1)]
    assert [e["step"] for e in events if e["type"] == "best"] == [1]
    phases = [e["phase"] for e in events if e["type"] == "phase"]
    assert phases[: phases.index("training") + 1] == ["preparing", "evaluating", "training"]


def test_eval_at_start_reaches_the_store_at_step_0_and_is_not_repeated_on_resume(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-rank ChildTuning-D job streaming to a real Redis store (the service's sink), stopped
    by SIGTERM and resumed: the store holds the step-0 evaluation once, best and final point at
    trained steps, and the resumed run goes straight back to training."""
    from service.cli.local_stack import RedisServer
    from service.core import env as names
    from service.core.records import JobRecord, new_job_id
    from service.core.store import Store

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        store = Store.from_url(server.url)
        job_id = new_job_id()
        store.create_job(JobRecord(id=job_id, tenant="t", spec={}, resolved_spec={}, queue="cpu-x2"))
        job_dir = tmp_path / job_id  # the sink names the job by its directory
        spec = make_spec(
            models["plain"],
            dataset={"preset": "glue/rte", "max_train_examples": 256, "max_eval_examples": 16},
            hyperparameters={
                "max_steps": 60,
                "save_every": 5,
                "eval_every": 20,
                "max_seq_length": 96,
                "eval_at_start": True,
            },
        )
        # env() hands the test's environment to the job's processes: rank 0 streams to the store.
        monkeypatch.setenv(names.SINKS, "workers.redis_sink:factory")
        monkeypatch.setenv(names.REDIS_URL, server.url)
        proc = _start(job_dir, spec)
        _wait_for_step(job_dir, 7, proc)
        os.killpg(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
        done = run_job(job_dir, None)
        assert done.returncode == 0, describe(done, job_dir)

        events = records(job_dir / "events.jsonl")
        resumed = next(i for i, e in enumerate(events) if e["type"] == "resumed")
        assert events[resumed]["from_step"] >= 5
        after = [e["phase"] for e in events[resumed:] if e["type"] == "phase"]
        assert after[0] == "training", after  # no evaluation before the resumed steps
        first_run = [e["phase"] for e in events[:resumed] if e["type"] == "phase"]
        assert first_run[first_run.index("fisher") :][:3] == ["fisher", "evaluating", "training"]

        in_file = [(r["step"], r["is_best"], r["is_final"]) for r in records(job_dir / "metrics.jsonl")
                   if r["kind"] == "eval"]  # fmt: skip
        stored = store.read_stream(job_id, "metrics", limit=100000).items
        in_store = [(r["step"], r["is_best"], r["is_final"]) for r in stored if r["kind"] == "eval"]
        assert in_store == in_file
        assert [s for s, _, _ in in_store] == [0, 20, 32, 40, 60]  # every 20 steps and the epoch's end (32)
        assert sum(1 for r in stored if r["kind"] == "eval" and r.get("at_start")) == 1
        assert in_store[0] == (0, False, False)
        assert [r["step"] for r in stored if r["kind"] == "train"] == list(range(1, 61))
        record = store.get_job(job_id)
        assert record is not None and record.best_eval is not None and record.final_eval is not None
        status = json.loads((job_dir / "status.json").read_text())
        assert record.final_eval["step"] == status["final"]["step"] == 60
        assert record.best_eval["step"] == status["best"]["step"] > 0
        best_steps = [s for s, best, _ in in_store if best]
        assert best_steps[-1] == status["best"]["step"]
    finally:
        server.stop()
