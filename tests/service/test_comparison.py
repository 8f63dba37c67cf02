"""The statistics an experiment reports, checked against numbers worked out by hand (and a
printed t-table), not against the code's own arithmetic."""

from __future__ import annotations

import math

import pytest

from service.core.comparison import (
    JobScore,
    compare_cells,
    curve_points,
    job_score,
    paired_difference,
    spread,
    t_quantile,
)

# Two-sided 95% critical values of Student's t from a printed table (df -> t).
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 30: 2.042}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_table(df: int) -> None:
    assert t_quantile(0.95, df) == pytest.approx(T_TABLE[df], abs=6e-4)


def test_t_quantile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_spread_of_three_scores() -> None:
    # mean 0.6; deviations -0.1, 0, 0.1 -> sample variance 0.02 / 2 = 0.01 -> std 0.1
    got = spread([0.5, 0.6, 0.7])
    assert got["n"] == 3 and got["min"] == 0.5 and got["max"] == 0.7
    assert got["mean"] == pytest.approx(0.6) and got["std"] == pytest.approx(0.1)
    assert spread([0.4]) == {"n": 1, "mean": 0.4, "std": None, "min": 0.4, "max": 0.4}
    assert spread([])["mean"] is None


def test_paired_difference_interval_and_verdicts() -> None:
    # diffs 0.02, 0.04, 0.06: mean 0.04, std 0.02, half width 4.303 * 0.02 / sqrt(3) = 0.049687
    got = paired_difference([0.02, 0.04, 0.06])
    assert got["mean_diff"] == pytest.approx(0.04)
    assert got["ci95"] == pytest.approx([0.04 - 0.049687, 0.04 + 0.049687], abs=1e-5)
    assert got["verdict"] == "within noise"
    # diffs 0.10, 0.11, 0.12: half width 4.303 * 0.01 / sqrt(3) = 0.024843 -> the interval is above 0
    assert paired_difference([0.10, 0.11, 0.12])["verdict"] == "better"
    assert paired_difference([-0.10, -0.11, -0.12])["verdict"] == "worse"
    assert paired_difference([0.10, 0.11, 0.12], higher=False)["verdict"] == "worse"  # a loss went up
    assert paired_difference([0.3])["verdict"] == "too few seeds"
    assert paired_difference([])["verdict"] == "too few seeds"


def test_cells_pair_seeds_with_their_baseline_partner() -> None:
    axes = {"mode": ["vanilla", "d"], "p": [0.1, 0.3], "hyperparameters.seed": [1, 2, 3]}
    scores = {
        ("vanilla", 0.1): [0.50, 0.60, 0.70],
        ("vanilla", 0.3): [0.55, 0.65, None],  # seed 3 has no score yet
        ("d", 0.1): [0.60, 0.71, 0.82],
        ("d", 0.3): [0.50, 0.60, 0.90],
    }
    jobs = [
        JobScore(f"job-{mode}-{p}-{seed}", {"mode": mode, "p": p, "hyperparameters.seed": seed}, value)
        for (mode, p), values in scores.items()
        for seed, value in zip((1, 2, 3), values, strict=True)
    ]
    cells, best = compare_cells(axes, jobs, {"mode": "vanilla"})
    by = {(c["values"]["mode"], c["values"]["p"]): c for c in cells}
    assert next(c["label"] for c in cells) == "mode='vanilla', p=0.1"
    d1 = by[("d", 0.1)]
    assert d1["n"] == 3 and d1["scores"] == {"1": 0.60, "2": 0.71, "3": 0.82}
    assert d1["mean"] == pytest.approx(0.71) and d1["std"] == pytest.approx(0.11)
    # paired with vanilla p=0.1: diffs 0.10, 0.11, 0.12 -> better (see above)
    assert d1["vs_baseline"]["against"] == "mode='vanilla', p=0.1"
    assert d1["vs_baseline"]["mean_diff"] == pytest.approx(0.11)
    assert d1["vs_baseline"]["verdict"] == "better"
    # paired with vanilla p=0.3 on its 2 scored seeds only: diffs -0.05, -0.05 -> std 0, CI [-0.05, -0.05]
    d3 = by[("d", 0.3)]["vs_baseline"]
    assert d3["n"] == 2 and d3["mean_diff"] == pytest.approx(-0.05)
    assert d3["ci95"] == pytest.approx([-0.05, -0.05]) and d3["verdict"] == "worse"
    assert by[("vanilla", 0.1)]["baseline"] and by[("vanilla", 0.1)]["vs_baseline"] is None
    assert by[("vanilla", 0.3)]["n"] == 2
    assert best == "mode='d', p=0.1"  # mean 0.71 beats 0.6667, 0.6, 0.6
    losses = [JobScore("a", {"mode": "x"}, 0.9), JobScore("b", {"mode": "y"}, 0.4)]
    assert compare_cells({"mode": ["x", "y"]}, losses, None, higher=False)[1] == "mode='y'"
    assert math.isclose(by[("vanilla", 0.3)]["mean"], 0.60)


def test_job_scores_final_and_best() -> None:
    final = {"eval_mcc": 0.3, "main_metric": "eval_mcc"}
    best = {"eval_mcc": 0.4, "eval_loss": 0.9, "main_metric": "eval_mcc"}
    assert job_score("succeeded", final, best, "mcc", "final") == 0.3
    assert job_score("failed", final, best, "mcc", "final") is None  # no final model
    assert job_score("running", None, best, "eval_mcc", "best") == 0.4
    evals = [{"eval_loss": 0.7}, {"eval_loss": 0.5}, {"eval_loss": 0.6}]
    assert job_score("succeeded", final, best, "loss", "best", evals) == 0.5  # a loss: the lowest
    before = {"eval_loss": 0.1, "step": 0, "at_start": True}  # eval_at_start: the untrained model
    assert job_score("succeeded", final, best, "loss", "best", [before, *evals]) == 0.5


def test_curve_points_over_seeds() -> None:
    points = curve_points([[(10, 0.2), (20, 0.4)], [(10, 0.4), (20, 0.6)], [(10, 0.3)]])
    assert [p["step"] for p in points] == [10, 20]
    assert points[0]["n"] == 3 and points[0]["mean"] == pytest.approx(0.3)
    assert points[0]["std"] == pytest.approx(0.1) and (points[0]["min"], points[0]["max"]) == (0.2, 0.4)
    assert points[1]["n"] == 2 and points[1]["mean"] == pytest.approx(0.5)
