"""The types every part of ``workers.train.data`` shares: the error, an example, a dataset's info.

A causal-lm row is ``service.core.datasets.SftRow`` (the one reader of those rows, shared with
the API's upload checks), re-exported here.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from service.core.datasets import SftRow


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file, the line and the reason."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled example. ``label`` is an id (int) for classification, a float for regression."""

    text: str
    text_pair: str | None
    label: int | float
    line: int  # 1-based line of the source file where the record starts


@dataclass(frozen=True)
class DatasetInfo:
    """What the training program needs to know about a dataset.

    ``metric`` is a metric family of ``workers.train.glue_metrics`` and ``main_metric`` the key
    of its result used to pick the best checkpoint. ``label_names[i]`` is the original label of
    id ``i`` (empty for regression); ``label_to_id`` maps original labels (as text) to ids.
    """

    name: str
    task_type: Literal["classification", "regression", "causal-lm"]
    num_labels: int
    label_names: tuple[str, ...]
    text_column: str
    text_pair_column: str | None
    label_column: str
    metric: str
    main_metric: str
    label_to_id: Mapping[str, int] = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.task_type == "regression"

    @property
    def is_causal_lm(self) -> bool:
        """Supervised fine-tuning of a decoder: rows are :class:`SftRow`, not :class:`Example`."""
        return self.task_type == "causal-lm"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for job events and the job record)."""
        return {
            "name": self.name,
            "task_type": self.task_type,
            "num_labels": self.num_labels,
            "label_names": list(self.label_names),
            "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_column": self.label_column,
            "metric": self.metric,
            "main_metric": self.main_metric,
            "label_to_id": dict(self.label_to_id),
        }


TaskInfo = DatasetInfo


@dataclass(frozen=True)
class Splits:
    """Both splits of a dataset, validated together: :class:`Example` rows, or :class:`SftRow`
    rows when ``info.is_causal_lm``."""

    train: Sequence[Example] | Sequence[SftRow]
    eval: Sequence[Example] | Sequence[SftRow]
    info: DatasetInfo
