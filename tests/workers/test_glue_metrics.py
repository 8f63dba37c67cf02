"""GLUE metrics against hand-computed cases (and scipy/scikit-learn when they happen to be installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.core.contract import METRICS, PRESET_METRICS, PRESETS
from service.core.contract.vocabulary import higher_is_better
from workers.train.glue_metrics import (
    MAIN_METRIC,
    METRIC_KEYS,
    accuracy,
    compute_metrics,
    exact_match,
    f1_binary,
    main_metric,
    matthews_corrcoef,
    normalize_answer,
    pearson,
    prediction_spread,
    rankdata,
    resolve_metric,
    spearman,
)


def test_accuracy() -> None:
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(np.array([2, 2]), np.array([2, 2])) == 1.0


def test_f1_by_hand() -> None:
    # preds 1 1 0 0 1 / labels 1 0 0 1 1: TP 2, FP 1, FN 1 -> 2*2 / (2*2 + 1 + 1) = 2/3
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(2 / 3)
    assert f1_binary([0, 0], [0, 0]) == 0.0  # no positives at all: 0 (zero_division=0)
    assert f1_binary([0, 0], [1, 1]) == 0.0
    assert f1_binary([1, 1], [1, 1]) == 1.0


def test_mcc_by_hand() -> None:
    # TP 2, TN 1, FP 1, FN 1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)
    # scikit-learn's documented example: -1/3
    assert matthews_corrcoef([1, -1, 1, 1], [1, 1, 1, -1]) == pytest.approx(-1 / 3)
    assert matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # undefined (one class predicted, or one class present): 0.0
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0


def _mcc_reference(pred: np.ndarray, true: np.ndarray) -> float:
    """Gorodkin's R_K through one-hot covariances (a different route from the confusion matrix)."""
    classes = np.unique(np.concatenate([pred, true]))
    x = (true[:, None] == classes[None, :]).astype(float)
    y = (pred[:, None] == classes[None, :]).astype(float)
    x -= x.mean(axis=0)
    y -= y.mean(axis=0)
    cov_xy, cov_xx, cov_yy = (x * y).sum(), (x * x).sum(), (y * y).sum()
    return 0.0 if cov_xx == 0 or cov_yy == 0 else float(cov_xy / math.sqrt(cov_xx * cov_yy))


def test_mcc_multiclass_matches_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        true = rng.integers(0, 4, size=50)
        pred = np.where(rng.random(50) < 0.6, true, rng.integers(0, 4, size=50))
        assert matthews_corrcoef(pred, true) == pytest.approx(_mcc_reference(pred, true), abs=1e-12)


def test_pearson_by_hand() -> None:
    # x 1 2 3, y 1 2 4: sum dxdy = 3, sum dx^2 = 2, sum dy^2 = 42/9 -> 9 / sqrt(84)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # constant side: undefined -> 0.0


def test_rankdata_averages_ties() -> None:
    assert rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert rankdata([3, 1, 3, 3, 2]).tolist() == [4.0, 1.0, 4.0, 4.0, 2.0]
    assert rankdata([0.5]).tolist() == [1.0]
    assert rankdata([]).tolist() == []


def test_spearman_by_hand() -> None:
    # ranks x 1 2.5 2.5 4, y 1 3 2 4: 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([5, 5, 5], [1, 2, 3]) == 0.0


def test_compute_metrics_per_task() -> None:
    logits = np.array([[2.0, 1.0], [0.1, 0.9], [0.3, 0.7], [0.8, 0.2], [0.0, 1.0]])  # -> 0 1 1 0 1
    labels = [1, 0, 0, 1, 1]
    assert compute_metrics("glue/rte", logits, labels) == {"accuracy": pytest.approx(0.2)}
    mrpc = compute_metrics("mrpc", [0, 1, 1, 0, 1], labels)
    assert list(mrpc) == ["f1", "accuracy", "combined_score"]
    assert mrpc["f1"] == pytest.approx(1 / 3)  # TP 1, FP 2, FN 2
    assert mrpc["combined_score"] == pytest.approx((1 / 3 + 0.2) / 2)
    cola = compute_metrics("glue/cola", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert cola == {"mcc": pytest.approx(1 / 6), "accuracy": pytest.approx(0.6)}
    stsb = compute_metrics("glue/sts-b", np.array([[1.0], [2.0], [3.0]]), [1.0, 2.0, 4.0])
    assert stsb["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert stsb["spearman"] == pytest.approx(1.0)
    assert stsb["combined_score"] == pytest.approx((stsb["pearson"] + 1.0) / 2)
    assert all(type(v) is float for v in stsb.values())


def test_names_and_main_metrics() -> None:
    assert set(METRIC_KEYS) == set(METRICS)  # the contract's metric names
    for preset in PRESETS:
        assert resolve_metric(preset) == PRESET_METRICS[preset]
    assert main_metric("glue/rte") == "accuracy"
    assert main_metric("glue/mrpc") == "f1"
    assert main_metric("glue/cola") == "mcc"
    assert main_metric("glue/sts-b") == "pearson"
    assert main_metric("sst2") == "accuracy"
    assert MAIN_METRIC["pearson_spearman"] == "pearson"
    for family, keys in METRIC_KEYS.items():
        assert keys[0] == MAIN_METRIC[family]
    with pytest.raises(ValueError, match="unknown metric or task 'glue/qqp'"):
        resolve_metric("glue/qqp")


def test_higher_is_better() -> None:
    for key in ("accuracy", "f1", "mcc", "pearson", "spearman", "combined_score"):
        assert higher_is_better(key)
    for key in ("loss", "eval_loss", "mse"):
        assert not higher_is_better(key)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics("accuracy", [], [])


# -- exact match (causal-lm answers): what docs/llm.md promises ---------------------------------


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ('"Positive".', "positive"),  # a quote inside final punctuation
        ('"Positive."', "positive"),  # final punctuation inside a quote
        ("'negative'!", "Negative"),
        ("\u201cPositive.\u201d", "positive"),  # typographic quotes are quotes
        ("\u2018positive\u2019", "positive"),
        ("\u00abpositive\u00bb", "positive"),
        ("  Positive  \nbecause the review says so", "positive"),  # the first line only
        ("the  Eiffel\tTower", "The Eiffel Tower."),  # inner spaces collapsed
        ('"positive"...', "positive"),
    ],
)
def test_exact_match_strips_quotes_and_final_punctuation_in_any_order(answer: str, reference: str) -> None:
    assert normalize_answer(answer) == normalize_answer(reference)
    assert exact_match([answer], [reference]) == 1.0


@pytest.mark.parametrize("answer", ["", "   ", '""', ".", "\u201c\u201d", '"!" \n positive'])
def test_an_empty_answer_never_matches_not_even_an_empty_reference(answer: str) -> None:
    assert normalize_answer(answer) == ""
    assert exact_match([answer], [answer]) == 0.0
    assert exact_match([answer], ["positive"]) == 0.0


def test_exact_match_keeps_what_is_not_quotes_or_final_punctuation() -> None:
    assert exact_match(["not positive", "positive", "?positive"], ["positive"] * 3) == pytest.approx(1 / 3)
    assert normalize_answer("(positive)") == "(positive)"  # brackets are not quotes
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError, match="2 answers for 1 references"):
        exact_match(["a", "b"], ["a"])


def test_prediction_spread_marks_a_constant_classifier() -> None:
    labels = [0, 1, 1, 0, 1]
    # Logits that put every example in class 1: the majority class everywhere.
    constant = [[0.1, 0.9]] * 5
    assert prediction_spread("glue/rte", constant, labels) == {"top_class_share": 1.0}
    varied = [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]]
    assert prediction_spread("glue/cola", varied, labels) == {"top_class_share": 0.6}
    assert prediction_spread("mcc", [], []) == {"top_class_share": 0.0}


def test_prediction_spread_of_a_regressor_is_relative_to_the_labels() -> None:
    labels = [0.0, 1.0, 2.0, 3.0]
    assert prediction_spread("glue/sts-b", [[2.5]] * 4, labels) == {"prediction_std_ratio": 0.0}
    half = prediction_spread("pearson_spearman", [0.0, 0.5, 1.0, 1.5], labels)["prediction_std_ratio"]
    assert abs(half - 0.5) < 1e-12
    assert prediction_spread("glue/sts-b", [1.0, 2.0], [3.0, 3.0]) == {"prediction_std_ratio": 0.0}
