"""The child network on the finished weights: the mask audit, a strict child, the sparse delta,
the final-step metric, and a parameter filter that selects nothing.

Real jobs (`childtune train`, 2 gloo ranks on CPU, a tiny random BERT on a slice of RTE), then
what the job directory, the service's readers and `childtuning.apply_delta` make of them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from childtuning import apply_delta
from childtuning.delta import load_weights
from service.cli.commands import print_mask
from service.core.artifacts import list_checkpoints, mask_summary
from service.core.jobdir import read_status
from tests.workers.test_train import describe, make_spec, records, run_job
from tests.workers.tiny import write_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("child") / "tiny", dropout=0.0)


def _short(model: Path, **over: object) -> dict[str, object]:
    hp = {"max_steps": 4, "eval_every": 4, "save_every": 4, "weight_decay": 0.1}
    return make_spec(model, hyperparameters=hp, **over)


@pytest.mark.parametrize("stage", [2, 3])
def test_a_strict_child_moves_only_the_child_and_ships_as_an_exact_delta(
    tmp_path: Path, base: Path, stage: int
) -> None:
    job = tmp_path / "job"
    spec = _short(
        base,
        childtuning={"mode": "childtuning-d", "reserve_p": 0.3, "strict_child": True, "audit_strict": True},
        resources={"num_ranks": 2, "zero_stage": stage, "device": "cpu"},
    )
    proc = run_job(job, spec)
    assert proc.returncode == 0, describe(proc, job)

    audit = json.loads((job / "masks" / "audit.json").read_text())
    assert audit["child_only"] and audit["changed_outside"] == 0
    assert audit["params"] and all("layer" in name for name in audit["params"])
    for name, row in audit["params"].items():  # (a parameter may keep no element: the top-k is global)
        assert row["changed"] == row["kept"], (name, row)
    assert audit["changed"] == audit["kept"] > 0
    assert abs(audit["kept_fraction"] - 0.3) < 1e-3

    # the delta rebuilds model/ bit-exactly from the base folder
    rebuilt = apply_delta(base, job / "delta", tmp_path / "rebuilt")
    model = load_weights(job / "model")
    assert rebuilt.keys() == model.keys()
    for name, tensor in model.items():
        assert torch.equal(rebuilt[name], tensor), name
    assert load_weights(tmp_path / "rebuilt").keys() == model.keys()
    assert (tmp_path / "rebuilt" / "config.json").is_file()
    info = json.loads((job / "delta" / "delta.json").read_text())
    assert info["delta_bytes"] < info["model_bytes"]

    # what the service reads from the job directory, and the CLI prints
    assert "delta" in {c.name for c in list_checkpoints(job) if c.kind == "delta"}
    summary = mask_summary(job)
    assert summary is not None and summary["audit"]["child_only"] is True
    out = io.StringIO()
    print_mask(summary, file=out)
    assert "only the child moved" in out.getvalue()

    # the final model's dev score, as its own field
    status = read_status(job)
    final_eval = [r for r in records(job / "metrics.jsonl") if r["kind"] == "eval" and r.get("is_final")]
    assert [r["step"] for r in final_eval] == [4]
    assert status["final"]["step"] == 4 and status["final"]["main_value"] == final_eval[0]["main_value"]
    card = json.loads((job / "model" / "childtune.json").read_text())
    assert card["final"]["main_value"] == final_eval[0]["main_value"]


def test_weight_decay_moves_masked_elements_and_audit_strict_fails_the_job(
    tmp_path: Path, base: Path
) -> None:
    job = tmp_path / "job"
    spec = _short(base, childtuning={"mode": "childtuning-d", "reserve_p": 0.3, "audit_strict": True})
    proc = run_job(job, spec)
    assert proc.returncode == 1, describe(proc, job)
    audit = json.loads((job / "masks" / "audit.json").read_text())
    assert audit["changed_outside"] > 0 and not audit["child_only"]
    error = read_status(job)["error"]
    assert error.startswith("childtuning.audit_strict:") and "strict_child" in error, error
    assert not (job / "delta").exists()


def test_a_filter_that_selects_nothing_fails_naming_the_field(tmp_path: Path, base: Path) -> None:
    job = tmp_path / "job"
    spec = _short(base, childtuning={"mode": "childtuning-d", "param_filter": [r"transformer\.h\.\d+\."]})
    proc = run_job(job, spec)
    assert proc.returncode == 1, describe(proc, job)
    error = read_status(job)["error"]
    assert error.startswith("childtuning.param_filter:") and "matches no trainable parameter" in error, error
