"""The Adam update-RMS benchmark's instrument on a tiny BERT and real CoLA batches: vanilla's
steps are Adam's (about lr each), update-dropout's follow 1/sqrt(p) by construction, and the
report turns the measurement into its table and its finding."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench.adam_update_rms import _batches, _run
from bench.glue_study.report import _rms_section
from tests.workers.tiny import write_tiny_model


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[float], float]]:
    from transformers import AutoTokenizer

    model = write_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")
    batches = _batches(AutoTokenizer.from_pretrained(model), 16, 8, 0)
    assert len(batches) == 16 and batches[0]["input_ids"].shape[0] == 8
    return {
        "vanilla": _run("vanilla", 1.0, model, batches, 0),
        "update-dropout": _run("update-dropout", 0.25, model, batches, 0),
        "childtuning-f": _run("childtuning-f", 0.25, model, batches, 0),
    }


def test_vanilla_adam_steps_about_lr_and_update_dropout_follows_one_over_sqrt_p(
    measured: dict[str, tuple[list[float], float]],
) -> None:
    vanilla, vanilla_net = measured["vanilla"]
    assert len(vanilla) == 16
    # Adam's first step is lr * g / (|g| + eps): lr on every element with a gradient, 0 where there
    # is none (such as the attention's key bias), so its RMS is at most lr.
    assert 0.8 < vanilla[0] <= 1.0 + 1e-6
    assert all(0.2 < r <= 1.01 for r in vanilla) and 0 < vanilla_net <= 1.0
    dropped, _ = measured["update-dropout"]
    ratios = [d / v for d, v in zip(dropped[4:], vanilla[4:], strict=True)]
    assert statistics.median(ratios) == pytest.approx(2.0, rel=0.1)  # 1 / sqrt(0.25)
    f_steps, f_net = measured["childtuning-f"]
    assert f_steps != vanilla and f_net != vanilla_net  # the gradient mask changed the run


def test_the_report_section_has_the_net_displacement_and_a_finding_from_the_numbers(tmp_path: Path) -> None:
    results = [{"mode": "vanilla", "p": 1.0, "ratio": 1.0, "ratio_iqr": [1.0, 1.0], "net_ratio": 1.0}]
    for p, ratio, net in ((0.1, 1.02, 0.80), (0.3, 1.05, 0.90), (0.5, 1.04, 0.95)):
        results.append(
            {"mode": "childtuning-f", "p": p, "ratio": ratio, "ratio_iqr": [0.9, 1.1], "net_ratio": net}
        )
        results.append(
            {"mode": "update-dropout", "p": p, "ratio": p**-0.5, "ratio_iqr": [1, 2], "net_ratio": 1.1}
        )
    setup = {
        "model": "m",
        "data": "d",
        "steps": 100,
        "batch": 16,
        "lr": 4e-5,
        "params": "x",
        "measured_over": "s",
    }
    text = "\n".join(_rms_section(json.loads(json.dumps({"setup": setup, "results": results})), "x.png"))
    assert "| childtuning-f | 0.1 | 1.020 | 0.900 - 1.100 | 0.800 | 0.316 | 3.162 |" in text
    assert "net displacement over 100 steps is 0.80, 0.90, 0.95 of vanilla's" in text
    assert "by 5% to 20%, not by the 29% to 68% that sqrt(p) predicts" in text
