"""The training program's pieces in one process: sinks, plan, R-Drop, checkpoints, the launcher's CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.core.contract import load_spec
from service.core.jobdir import EVENTS_FILE, METRICS_FILE, read_jsonl
from workers.launch import settle
from workers.train import checkpoints
from workers.train.errors import JobError
from workers.train.losses import rdrop_loss
from workers.train.plan import Plan, step_seed
from workers.train.program import Run
from workers.train.sinks import Recorder

ROOT = Path(__file__).resolve().parents[2]


def spec(**hp: object):
    return load_spec(
        {
            "model": "minilm-l6",
            "dataset": {"preset": "glue/rte"},
            "hyperparameters": {"batch_size": 8, **hp},
            "resources": {"num_ranks": 2},
        }
    )


# -- sinks ---------------------------------------------------------------------------------------


def test_recorder_writes_each_metric_step_once_across_restarts(tmp_path: Path) -> None:
    s = spec()
    rec = Recorder.for_job(tmp_path, s, tensorboard=False)
    for step in (1, 2, 3):
        assert rec.metric("train", step, loss=0.5)
    assert rec.metric("eval", 2, eval_accuracy=0.75)
    rec.event("phase", phase="training")
    rec.close()
    # a kill mid-write leaves a torn last line
    with (tmp_path / METRICS_FILE).open("a") as f:
        f.write('{"kind": "train", "step": 4, "lo')

    again = Recorder.for_job(tmp_path, s, tensorboard=False)
    assert again.last_step == {"train": 3, "eval": 2}
    assert not again.metric("train", 2, loss=9.0)  # re-done after a resume: not written again
    assert again.metric("train", 4, loss=0.25)
    assert again.metric("eval", 4, eval_accuracy=float("nan"))  # NaN is written as null
    again.close()
    rows = read_jsonl(tmp_path / METRICS_FILE)
    assert [(r["kind"], r["step"]) for r in rows] == [
        ("train", 1),
        ("train", 2),
        ("train", 3),
        ("eval", 2),
        ("train", 4),
        ("eval", 4),
    ]
    assert rows[-1]["eval_accuracy"] is None and all("time" in r for r in rows)
    for line in (tmp_path / METRICS_FILE).read_text().splitlines()[:3]:
        json.loads(line)  # the lines before the torn one stay intact
    assert read_jsonl(tmp_path / EVENTS_FILE)[0]["type"] == "phase"


class _Broken:
    def metric(self, record: object) -> None:
        raise RuntimeError("dashboard down")

    def event(self, record: object) -> None:
        raise RuntimeError("dashboard down")

    def close(self) -> None:
        pass


class _Keep:
    def __init__(self) -> None:
        self.seen: list[dict] = []

    def metric(self, record: dict) -> None:
        self.seen.append(record)

    def event(self, record: dict) -> None:
        self.seen.append(record)

    def close(self) -> None:
        pass


def test_a_failing_sink_is_dropped_and_the_others_go_on() -> None:
    keep = _Keep()
    rec = Recorder([_Broken(), keep])
    rec.metric("train", 1, loss=1.0)
    rec.event("phase", phase="training")
    assert len(rec.sinks) == 1 and [r.get("step") for r in keep.seen] == [1, None]


def test_extra_sinks_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHILDTUNE_SINKS", "tests.workers.test_train_parts:make_sink, no.such.module:factory")
    rec = Recorder.for_job(tmp_path, spec(), tensorboard=False)
    assert [type(s).__name__ for s in rec.sinks] == ["JsonlSink", "_Keep"]
    rec.close()


def make_sink(job_dir: Path, job_spec: object) -> _Keep:
    return _Keep()


# -- plan, seeds ---------------------------------------------------------------------------------


def test_plan_counts_steps_and_rejects_too_little_data() -> None:
    plan = Plan.make(spec(epochs=3, gradient_accumulation_steps=2, warmup_ratio=0.1), 100, 2)
    assert (plan.steps_per_epoch, plan.total_steps, plan.micro_per_rank, plan.warmup_steps) == (6, 18, 4, 2)
    assert Plan.make(spec(max_steps=7), 100, 2).total_steps == 7
    with pytest.raises(JobError, match=r"hyperparameters.batch_size: the training set has 7 examples"):
        Plan.make(spec(), 7, 2)


def test_step_seeds_differ_by_rank_and_step_and_repeat() -> None:
    seeds = {step_seed(42, r, s) for r in range(2) for s in range(50)}
    assert len(seeds) == 100 and step_seed(42, 1, 3) == step_seed(42, 1, 3)


def _after_steps(tmp_path: Path, **hp: object) -> tuple[list[int], list[int]]:
    """The steps of a 12-step job (5 steps an epoch) followed by an evaluation, and by a checkpoint."""
    s = spec(max_steps=12, **hp)
    run = Run(tmp_path, s, rank=0)  # no model: the decisions need only the spec and the plan
    run.plan = Plan.make(s, 40, 2)
    assert (run.plan.steps_per_epoch, run.plan.total_steps) == (5, 12)
    steps = range(1, 13)
    return [t for t in steps if run.should_evaluate(t)], [t for t in steps if run.should_save(t)]


def test_evaluations_and_checkpoints_come_at_epoch_ends_and_after_the_last_step(tmp_path: Path) -> None:
    assert _after_steps(tmp_path) == ([5, 10, 12], [5, 10, 12])


def test_eval_every_adds_to_the_epoch_ends_but_save_every_replaces_them(tmp_path: Path) -> None:
    assert _after_steps(tmp_path, eval_every=3, save_every=4) == ([3, 5, 6, 9, 10, 12], [4, 8, 12])
    # beyond the job's end: only what is always done
    assert _after_steps(tmp_path, eval_every=100, save_every=100) == ([5, 10, 12], [12])


# -- R-Drop --------------------------------------------------------------------------------------


class _Head(torch.nn.Module):
    def __init__(self, out: int, p: float) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)
        self.drop = torch.nn.Dropout(p)
        self.lin = torch.nn.Linear(8, out)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        class Out:
            logits = self.lin(self.drop(self.emb(input_ids).mean(1)))

        return Out()


def test_rdrop_is_twice_the_task_loss_without_dropout_and_adds_the_symmetric_kl() -> None:
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(0, 10, (6, 5)),
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
        "labels": torch.randint(0, 3, (6,)),
    }
    model = _Head(3, 0.0)
    loss, logits = rdrop_loss(model, batch, 4.0, regression=False)
    ce = torch.nn.functional.cross_entropy(logits, batch["labels"])
    torch.testing.assert_close(loss, 2 * ce)  # identical passes: KL is 0

    model = _Head(3, 0.5).train()
    torch.manual_seed(1)
    loss, _ = rdrop_loss(model, batch, 4.0, regression=False)
    torch.manual_seed(1)  # the same dropout draws, by hand
    both = model(batch["input_ids"].repeat(2, 1), batch["attention_mask"].repeat(2, 1)).logits
    p1, p2 = both.chunk(2)
    lp1, lp2 = p1.log_softmax(-1), p2.log_softmax(-1)
    kl_21 = (lp2.exp() * (lp2 - lp1)).sum(-1).mean()
    kl_12 = (lp1.exp() * (lp1 - lp2)).sum(-1).mean()
    expected = (
        torch.nn.functional.cross_entropy(p1, batch["labels"])
        + torch.nn.functional.cross_entropy(p2, batch["labels"])
        + 2.0 * (kl_21 + kl_12)
    )
    torch.testing.assert_close(loss, expected)
    assert (kl_21 + kl_12) > 0


def test_rdrop_regression_uses_squared_distances() -> None:
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(0, 10, (4, 3)),
        "attention_mask": torch.ones(4, 3, dtype=torch.long),
        "labels": torch.rand(4) * 5,
    }
    model = _Head(1, 0.5).train()
    torch.manual_seed(3)
    loss, _ = rdrop_loss(model, batch, 2.0, regression=True)
    torch.manual_seed(3)
    a, b = (
        model(batch["input_ids"].repeat(2, 1), batch["attention_mask"].repeat(2, 1))
        .logits.squeeze(-1)
        .chunk(2)
    )
    y = batch["labels"]
    torch.testing.assert_close(
        loss, ((a - y) ** 2).mean() + ((b - y) ** 2).mean() + 2.0 * ((a - b) ** 2).mean()
    )


# -- checkpoints, settle -------------------------------------------------------------------------


def test_only_marked_checkpoints_count_and_unmarked_are_removed(tmp_path: Path) -> None:
    for step in (4, 8, 12):
        (tmp_path / checkpoints.tag_of(step)).mkdir()
    for step in (4, 8):
        (tmp_path / checkpoints.tag_of(step) / checkpoints.MARKER).write_text(
            json.dumps({"step": step, "best": None})
        )
    assert [s for s, _ in checkpoints.complete_tags(tmp_path)] == [4, 8]
    step, path, state = checkpoints.latest(tmp_path)  # type: ignore[misc]
    assert step == 8 and path.name == "step-00000008" and state["step"] == 8
    assert checkpoints.remove_incomplete(tmp_path) == ["step-00000012"]
    assert not (tmp_path / "step-00000012").exists()
    assert checkpoints.latest(tmp_path / "missing") is None


def test_settle_completes_a_status_left_running(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "step": 3, "updated": 1.0}))
    assert settle(tmp_path, -9, interrupted=False, started=0.0) == 1
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and "exited with code -9" in status["error"]
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "updated": 1.0}))
    assert settle(tmp_path, 1, interrupted=True, started=0.0) == 75
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "interrupted"


def test_childtune_train_rejects_a_bad_spec_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "spec.yaml"
    bad.write_text(
        "model: minilm-l6\ndataset: {preset: glue/rte}\nchildtuning: {mode: childtuning-x, reserve_p: 2}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "train", str(bad), "--job-dir", str(tmp_path / "job")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "childtuning.mode: must be one of vanilla" in proc.stderr
    assert "childtuning.reserve_p: must be > 0 and <= 1 (got 2)" in proc.stderr
    assert not (tmp_path / "job" / "job.json").exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "train",
            "--ranks",
            "3",
            str(ROOT / "docs" / "examples" / "rte-d.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2 and "hyperparameters.batch_size" in proc.stderr and "divisible" in proc.stderr


def test_the_worker_refuses_models_it_cannot_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.train.model_io import ModelError, model_location

    monkeypatch.delenv("CHILDTUNE_ALLOW_HUB", raising=False)
    assert Path(model_location("minilm-l6"), "config.json").is_file()
    with pytest.raises(ModelError, match=r"^model: 'bert-base-uncased': no Hugging Face hub access"):
        model_location("bert-base-uncased")
    with pytest.raises(ModelError, match=r"^model: no model folder /no/such/folder"):
        model_location("/no/such/folder")
    with pytest.raises(ModelError, match=r"^model: the folder .* has no config.json"):
        model_location(str(tmp_path))
    monkeypatch.setenv("CHILDTUNE_ALLOW_HUB", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # allowed, but this process cannot reach the hub
    with pytest.raises(ModelError, match="no Hugging Face hub access"):
        model_location("bert-base-uncased")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert model_location("bert-base-uncased") == "bert-base-uncased"


def test_recorder_writes_a_step_0_evaluation_once_across_restarts(tmp_path: Path) -> None:
    """``eval_at_start`` records an evaluation at step 0: written, and not again after a restart."""
    s = spec(eval_at_start=True)
    rec = Recorder.for_job(tmp_path, s, tensorboard=False)
    assert rec.metric("eval", 0, eval_accuracy=0.5, at_start=True)
    assert not rec.metric("eval", 0, eval_accuracy=0.5, at_start=True)
    assert rec.metric("train", 1, loss=0.7)
    rec.close()
    again = Recorder.for_job(tmp_path, s, tensorboard=False)
    assert again.last_step == {"eval": 0, "train": 1}
    assert not again.metric("eval", 0, eval_accuracy=0.5, at_start=True)  # a job restarted afresh
    assert again.metric("eval", 1, eval_accuracy=0.75)
    again.close()
    rows = read_jsonl(tmp_path / METRICS_FILE)
    assert [(r["kind"], r["step"]) for r in rows] == [("eval", 0), ("train", 1), ("eval", 1)]
