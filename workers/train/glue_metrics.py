"""GLUE metrics in plain numpy (no scipy, no scikit-learn).

Metric families (the names of ``service.core.contract.METRICS``) and the keys each returns:

=================  =====================================  ==============  ==========================
family             keys                                    main key        GLUE task
=================  =====================================  ==============  ==========================
accuracy           accuracy                                accuracy        RTE, SST-2
f1                 f1 (class 1), accuracy, combined_score  f1              MRPC
mcc                mcc, accuracy                           mcc             CoLA
pearson_spearman   pearson, spearman, combined_score       pearson         STS-B
=================  =====================================  ==============  ==========================

``combined_score`` is the mean of the task's two GLUE numbers (what the GLUE leaderboard
averages, and what Hugging Face's ``run_glue`` reports). The *main* metric, used to pick the
best checkpoint and shown first, is the one the ChildTuning paper's tables report per task:
F1 for MRPC, Matthews correlation for CoLA, Pearson correlation for STS-B, accuracy otherwise.
Every metric here is higher-is-better; losses (``*loss``) and perplexity are lower-is-better.
The causal-lm families ``perplexity`` and ``exact_match`` are computed by the training
program's evaluation (docs/llm.md); their keys are listed here so every family has a main key.

Undefined correlations are reported as 0.0, not NaN, so that metrics stay valid JSON and
comparisons with a best value keep working: Matthews correlation when a confusion-matrix
margin is constant (scikit-learn's convention), Pearson/Spearman when either side is constant.
F1 is 0.0 when there is no true positive (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from service.core.contract.vocabulary import PRESET_METRICS

__all__ = [
    "MAIN_METRIC",
    "METRIC_KEYS",
    "TASK_METRICS",
    "accuracy",
    "compute_metrics",
    "exact_match",
    "f1_binary",
    "main_metric",
    "matthews_corrcoef",
    "normalize_answer",
    "pearson",
    "prediction_spread",
    "rankdata",
    "resolve_metric",
    "spearman",
]

# Keys each family returns, main key first.
METRIC_KEYS: Mapping[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "f1": ("f1", "accuracy", "combined_score"),
    "mcc": ("mcc", "accuracy"),
    "pearson_spearman": ("pearson", "spearman", "combined_score"),
    # causal-lm (computed by the training program's evaluation, not compute_metrics)
    "perplexity": ("perplexity", "token_accuracy"),
    "exact_match": ("exact_match", "perplexity", "token_accuracy"),
}

MAIN_METRIC: Mapping[str, str] = {family: keys[0] for family, keys in METRIC_KEYS.items()}

# GLUE task names (as in the presets, with and without the "glue/" prefix) -> metric family.
TASK_METRICS: Mapping[str, str] = {
    "rte": "accuracy",
    "mrpc": "f1",
    "cola": "mcc",
    "sts-b": "pearson_spearman",
    "sst-2": "accuracy",
}

_ALIASES: Mapping[str, str] = {
    "stsb": "sts-b",
    "sst2": "sst-2",
    "matthews": "mcc",
    "spearman": "pearson_spearman",
}


def resolve_metric(task_metric: str) -> str:
    """The metric family for a family name, a task name (``rte``) or a preset (``glue/rte``)."""
    name = task_metric.strip().lower()
    if name in PRESET_METRICS:  # every preset of the contract, instruct/sst-2 included
        return PRESET_METRICS[name]
    name = name.removeprefix("glue/")
    name = _ALIASES.get(name, name)
    if name in METRIC_KEYS:
        return name
    if name in TASK_METRICS:
        return TASK_METRICS[name]
    allowed = ", ".join([*METRIC_KEYS, *TASK_METRICS])
    raise ValueError(f"unknown metric or task {task_metric!r}; allowed: {allowed}")


def main_metric(task_metric: str) -> str:
    """The key of the main metric for a family, task or preset name."""
    return MAIN_METRIC[resolve_metric(task_metric)]


# ---------------------------------------------------------------------------------------------
# Individual metrics
# ---------------------------------------------------------------------------------------------


# Quotes stripped around an answer (straight, back-tick and typographic), and the punctuation
# stripped at its end; both in any order and as often as they occur: '"Positive".' -> Positive.
ANSWER_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e\u201a\u2039\u203a"
ANSWER_FINAL_PUNCTUATION = ".!?,;:\u2026"


def normalize_answer(text: str) -> str:
    """A generated or reference answer as exact match compares it: its first line, without
    surrounding whitespace, quotes (typographic ones too) and final punctuation, stripped in any
    order until none is left, case-folded, inner spaces collapsed."""
    first = text.strip().split("\n", 1)[0] if text.strip() else ""
    while True:
        stripped = first.strip().strip(ANSWER_QUOTES).rstrip(ANSWER_FINAL_PUNCTUATION)
        if stripped == first:
            break
        first = stripped
    return " ".join(first.casefold().split())


def exact_match(answers: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of answers equal to their reference after :func:`normalize_answer`; an
    answer that is empty once normalized never matches (not even an empty reference)."""
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers for {len(references)} references")
    if not references:
        return 0.0
    hits = 0
    for answer, reference in zip(answers, references, strict=True):
        said = normalize_answer(answer)
        hits += bool(said) and said == normalize_answer(reference)
    return hits / len(references)


def _pair(predictions: ArrayLike, labels: ArrayLike) -> tuple[NDArray[Any], NDArray[Any]]:
    p = np.asarray(predictions)
    y = np.asarray(labels)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError(f"predictions and labels must be 1-D (got shapes {p.shape} and {y.shape})")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"predictions and labels differ in length ({p.shape[0]} != {y.shape[0]})")
    if p.shape[0] == 0:
        raise ValueError("no predictions to score")
    return p, y


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to the label."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1_binary(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the ``positive`` class: 2 TP / (2 TP + FP + FN); 0.0 when TP + FP + FN is 0."""
    p, y = _pair(predictions, labels)
    pp = p == positive
    yp = y == positive
    tp = int(np.sum(pp & yp))
    fp = int(np.sum(pp & ~yp))
    fn = int(np.sum(~pp & yp))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient (Gorodkin's multi-class form; binary MCC for 2 classes).

    0.0 when undefined (all labels, or all predictions, one class).
    """
    p, y = _pair(predictions, labels)
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = classes.shape[0]
    n = y.shape[0]
    yc, pc = codes[:n], codes[n:]
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (yc, pc), 1.0)
    t_sum = confusion.sum(axis=1)
    p_sum = confusion.sum(axis=0)
    correct = float(np.trace(confusion))
    total = float(n)
    cov_ytyp = correct * total - float(t_sum @ p_sum)
    cov_ypyp = total * total - float(p_sum @ p_sum)
    cov_ytyt = total * total - float(t_sum @ t_sum)
    if cov_ypyp == 0.0 or cov_ytyt == 0.0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined)."""
    a, b = _pair(x, y)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if denom == 0.0 or not np.isfinite(denom):
        return 0.0
    r = float(np.dot(a, b) / denom)
    return max(-1.0, min(1.0, r))


def rankdata(values: ArrayLike) -> NDArray[np.float64]:
    """Ranks 1..n, ties given the average of the ranks they span (scipy's ``method="average"``)."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"rankdata needs a 1-D array (got shape {v.shape})")
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    new_group = np.empty(v.shape[0], dtype=bool)
    if v.shape[0]:
        new_group[0] = True
        new_group[1:] = sorted_v[1:] != sorted_v[:-1]
    group = np.cumsum(new_group) - 1  # group id of each sorted position
    starts = np.flatnonzero(new_group)  # first sorted position of each group
    ends = np.append(starts[1:], v.shape[0])  # one past the last
    average = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(v.shape[0], dtype=np.float64)
    ranks[order] = average[group]
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0.0 when either side is constant."""
    a, b = _pair(x, y)
    return pearson(rankdata(a), rankdata(b))


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _class_predictions(predictions: ArrayLike) -> NDArray[Any]:
    p = np.asarray(predictions)
    if p.ndim == 2:
        return np.argmax(p, axis=-1)  # logits or probabilities
    return p


def _regression_predictions(predictions: ArrayLike) -> NDArray[np.float64]:
    p = np.asarray(predictions, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    return p


def compute_metrics(
    task_metric: str, predictions: ArrayLike | Sequence[Any], labels: ArrayLike | Sequence[Any]
) -> dict[str, float]:
    """Score predictions with a metric family, GLUE task or preset name (see the module docstring).

    Classification takes class ids (shape [n]) or scores/logits (shape [n, k], arg-maxed);
    regression takes values of shape [n] or [n, 1]. Returns plain Python floats, main key first.
    """
    family = resolve_metric(task_metric)
    if family == "pearson_spearman":
        p = _regression_predictions(predictions)
        y = np.asarray(labels, dtype=np.float64)
        r, rho = pearson(p, y), spearman(p, y)
        return {"pearson": r, "spearman": rho, "combined_score": (r + rho) / 2.0}
    cls = _class_predictions(predictions)
    y = np.asarray(labels)
    acc = accuracy(cls, y)
    if family == "accuracy":
        return {"accuracy": acc}
    if family == "f1":
        f1 = f1_binary(cls, y)
        return {"f1": f1, "accuracy": acc, "combined_score": (f1 + acc) / 2.0}
    return {"mcc": matthews_corrcoef(cls, y), "accuracy": acc}


def prediction_spread(
    task_metric: str, predictions: ArrayLike | Sequence[Any], labels: ArrayLike | Sequence[Any]
) -> dict[str, float]:
    """How varied a model's dev predictions are: the mark of a collapsed fine-tune.

    Classification: ``top_class_share``, the share of the examples given the most predicted
    class (1.0 for a constant prediction, e.g. the majority class everywhere). Regression:
    ``prediction_std_ratio``, the predictions' standard deviation over the labels' (0.0 for a
    constant prediction; 0.0 too when the labels are constant).
    """
    if resolve_metric(task_metric) == "pearson_spearman":
        p = _regression_predictions(predictions)
        label_std = float(np.std(np.asarray(labels, dtype=np.float64)))
        return {"prediction_std_ratio": float(np.std(p)) / label_std if label_std > 0 else 0.0}
    cls = _class_predictions(predictions)
    if cls.size == 0:
        return {"top_class_share": 0.0}
    _, counts = np.unique(cls, return_counts=True)
    return {"top_class_share": float(counts.max()) / float(cls.size)}
