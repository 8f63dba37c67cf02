"""An experiment's grid: expanded into one valid job spec a cell, or refused whole with every
invalid cell named by its axis values."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.experiments import MAX_CELLS, ExperimentError, expand, load_experiment

BASE: dict[str, Any] = {
    "model": "minilm-l6",
    "dataset": {"preset": "glue/rte"},
    "hyperparameters": {"max_steps": 4, "batch_size": 8},
}


def test_the_grid_is_the_product_of_the_axes_in_order() -> None:
    spec = load_experiment(
        {
            "base": BASE,
            "axes": {"childtuning.mode": ["vanilla", "childtuning-d"], "hyperparameters.seed": [42, 52, 57]},
            "baseline": {"childtuning.mode": "vanilla"},
        }
    )
    cells = expand(spec)
    assert [(c.values["childtuning.mode"], c.values["hyperparameters.seed"]) for c in cells] == [
        ("vanilla", 42),
        ("vanilla", 52),
        ("vanilla", 57),
        ("childtuning-d", 42),
        ("childtuning-d", 52),
        ("childtuning-d", 57),
    ]
    for cell in cells:
        assert cell.job.childtuning.mode == cell.values["childtuning.mode"]
        assert cell.job.hyperparameters.seed == cell.values["hyperparameters.seed"]
        assert cell.job.hyperparameters.max_steps == 4  # the base's own fields stay
    assert (spec.score, spec.max_parallel) == ("final", 2)
    assert BASE["hyperparameters"] == {"max_steps": 4, "batch_size": 8}  # the base is not changed


def test_an_invalid_cell_refuses_the_whole_grid_naming_its_values() -> None:
    spec = load_experiment(
        {"base": BASE, "axes": {"childtuning.reserve_p": [0.1, 0.3, 1.5], "hyperparameters.seed": [1, 2]}}
    )
    with pytest.raises(ExperimentError) as info:
        expand(spec)
    fields = [field for field, _ in info.value.errors]
    assert fields == [
        "cell [childtuning.reserve_p=1.5, hyperparameters.seed=1]",
        "cell [childtuning.reserve_p=1.5, hyperparameters.seed=2]",
    ]
    assert "childtuning.reserve_p: must be > 0 and <= 1 (got 1.5)" in info.value.errors[0][1]


def test_a_field_path_the_contract_does_not_know_is_named() -> None:
    spec = load_experiment({"base": BASE, "axes": {"hyperparameters.learning_rat": [1e-5]}})
    with pytest.raises(ExperimentError) as info:
        expand(spec)
    assert info.value.errors[0][0] == "cell [hyperparameters.learning_rat=1e-05]"
    assert "learning_rat" in info.value.errors[0][1]


def test_limits_and_the_baseline_are_checked() -> None:
    side = int(MAX_CELLS**0.5) + 1
    big = load_experiment(
        {
            "base": BASE,
            "axes": {"hyperparameters.seed": list(range(side)), "childtuning.seed": list(range(side))},
        }
    )
    with pytest.raises(ExperimentError, match=f"at most {MAX_CELLS}"):
        expand(big)
    wrong = load_experiment(
        {
            "base": BASE,
            "axes": {"childtuning.mode": ["vanilla"]},
            "baseline": {"childtuning.mode": "childtuning-f"},
        }
    )
    with pytest.raises(ExperimentError) as info:
        expand(wrong)
    assert info.value.errors[0][0] == "baseline.childtuning.mode"
    for body, field in (
        ({"base": BASE, "axes": {}}, "axes"),
        ({"base": BASE, "axes": {"childtuning.mode": []}}, "axes"),
        ({"base": BASE, "axes": {"../etc": [1]}}, "axes"),
        ({"base": BASE, "axes": {"childtuning.mode": ["vanilla"]}, "max_parallel": 0}, "max_parallel"),
        ({"base": BASE, "axes": {"childtuning.mode": ["vanilla"]}, "score": "mean"}, "score"),
    ):
        with pytest.raises(ExperimentError) as bad:
            load_experiment(body)
        assert bad.value.errors[0][0] == field, bad.value.errors
