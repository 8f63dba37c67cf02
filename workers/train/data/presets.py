"""The GLUE presets: each task's folder, encoding, columns, labels and metric, and where the data lives.

:data:`PRESET_TASKS` names the five tasks (``glue/rte``, ``glue/mrpc``, ``glue/cola``,
``glue/sts-b``, ``glue/sst-2``); :data:`INSTRUCT_PRESETS` turns one into instruction data for a
causal LM (``instruct/sst-2``: prompt/completion rows); :func:`data_root` finds the folder holding
``glue/<TASK>/{train,dev}.tsv``. Reading those files is ``workers.train.data.files``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.core import env
from service.core.contract import PRESET_METRICS
from service.core.datasets import SftRow
from workers.train.data.base import DatasetError, DatasetInfo, Example
from workers.train.glue_metrics import MAIN_METRIC


@dataclass(frozen=True)
class _Preset:
    name: str
    directory: str
    encoding: str
    columns: tuple[str, ...] | None  # names for a file without a header row
    text_column: str
    text_pair_column: str | None
    label_column: str
    task_type: Literal["classification", "regression"]
    label_values: tuple[str, ...] = ()  # raw label of id 0, 1, ...
    label_names: tuple[str, ...] = ()
    label_range: tuple[float, float] | None = None  # regression


PRESET_TASKS: Mapping[str, _Preset] = {
    "glue/rte": _Preset(
        name="glue/rte",
        directory="RTE",
        encoding="utf-8-sig",
        columns=None,
        text_column="sentence1",
        text_pair_column="sentence2",
        label_column="label",
        task_type="classification",
        label_values=("entailment", "not_entailment"),
        label_names=("entailment", "not_entailment"),
    ),
    "glue/mrpc": _Preset(
        name="glue/mrpc",
        directory="MRPC",
        encoding="utf-8-sig",
        columns=None,
        text_column="#1 String",
        text_pair_column="#2 String",
        label_column="Quality",
        task_type="classification",
        label_values=("0", "1"),
        label_names=("not_equivalent", "equivalent"),
    ),
    "glue/cola": _Preset(
        name="glue/cola",
        directory="CoLA",
        encoding="utf-8-sig",
        columns=("source", "label", "original_label", "sentence"),
        text_column="sentence",
        text_pair_column=None,
        label_column="label",
        task_type="classification",
        label_values=("0", "1"),
        label_names=("unacceptable", "acceptable"),
    ),
    "glue/sts-b": _Preset(
        name="glue/sts-b",
        directory="STS-B",
        encoding="utf-8-sig",
        columns=None,
        text_column="sentence1",
        text_pair_column="sentence2",
        label_column="score",
        task_type="regression",
        label_range=(0.0, 5.0),
    ),
    "glue/sst-2": _Preset(
        name="glue/sst-2",
        directory="SST-2",
        encoding="utf-8-sig",
        columns=None,
        text_column="sentence",
        text_pair_column=None,
        label_column="label",
        task_type="classification",
        label_values=("0", "1"),
        label_names=("negative", "positive"),
    ),
}


@dataclass(frozen=True)
class _Instruct:
    """A GLUE task turned into instruction data: a prompt template and the answer of each label."""

    source: str  # the GLUE preset whose rows are read
    prompt: str  # str.format template; {text} is the sentence
    answers: tuple[str, ...]  # the completion of label id 0, 1, ...


# instruct/sst-2: one short correct answer per row, so exact match scores generation.
INSTRUCT_PRESETS: Mapping[str, _Instruct] = {
    "instruct/sst-2": _Instruct(
        source="glue/sst-2",
        prompt="Review: {text}\nIs the sentiment of this movie review positive or negative? "
        "Answer with one word.",
        answers=("negative", "positive"),
    ),
}


def instruct_row(name: str, example: Example) -> SftRow:
    """A GLUE example of an instruct preset's source task as a prompt/completion row."""
    preset = INSTRUCT_PRESETS[name]
    return SftRow(
        example.line,
        prompt=preset.prompt.format(text=example.text.strip()),
        completion=preset.answers[int(example.label)],
    )


def instruct_info(name: str) -> DatasetInfo:
    metric = PRESET_METRICS[name]
    return DatasetInfo(
        name=name,
        task_type="causal-lm",
        num_labels=0,
        label_names=(),
        text_column="prompt",
        text_pair_column=None,
        label_column="completion",
        metric=metric,
        main_metric=MAIN_METRIC[metric],
    )


def data_root() -> Path:
    """The folder holding ``glue/<TASK>/{train,dev}.tsv``.

    ``$CHILDTUNE_DATA`` when set; else ``<repo>/../shared/data``, else ``<repo>/shared/data``
    (``<repo>`` = the folder holding the ``workers`` package), whichever exists first.
    """
    given = os.environ.get(env.DATA)
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            raise DatasetError(f"{env.DATA}={given} is not a directory")
        return root
    repo = Path(__file__).resolve().parents[3]
    candidates = (repo.parent / "shared" / "data", repo / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"no data folder for the GLUE presets: set {env.DATA} to the folder that holds "
        f"glue/<TASK>/train.tsv and dev.tsv (looked in {', '.join(str(c) for c in candidates)})"
    )


def _preset_info(preset: _Preset) -> DatasetInfo:
    metric = PRESET_METRICS[preset.name]
    regression = preset.task_type == "regression"
    return DatasetInfo(
        name=preset.name,
        task_type=preset.task_type,
        num_labels=1 if regression else len(preset.label_values),
        label_names=preset.label_names,
        text_column=preset.text_column,
        text_pair_column=preset.text_pair_column,
        label_column=preset.label_column,
        metric=metric,
        main_metric=MAIN_METRIC[metric],
        label_to_id={value: i for i, value in enumerate(preset.label_values)},
    )
