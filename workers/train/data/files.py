"""Datasets for a job: GLUE presets and user files, validated row by row before training.

What this module gives the training program:

- :func:`load_examples` / :func:`load_splits` read a :class:`~service.core.contract.DatasetSpec`
  into :class:`Example` lists and a :class:`DatasetInfo` (task type, labels, metric). Every
  row of both files is checked first; the first problem raises :class:`DatasetError` naming
  the file, the 1-based line and the reason.
- :func:`tokenize` turns examples into a :class:`TokenizedDataset` (per-example token ids,
  padded per batch by :meth:`TokenizedDataset.collate`).
- :func:`shard_indices` deals each rank its part of every global batch, identically for any
  number of ranks; :func:`eval_shard` splits evaluation without dropping anything.

File formats (csv, tsv, jsonl; detection, quoting, encoding) are read by ``service.core.datasets``,
the one reader the API's upload checks use too; errors here put the file's path in front.
JSONL text fields must be strings.

Labels of user files: regression labels are finite numbers. Classification labels are
integers or strings, collected from the TRAINING file: when all are integers they sort
numerically, else as strings, and ids are positions in that order (so integer labels
0..k-1 keep their values); with ``num_labels`` given and integer labels, a label IS its id
(0 <= label < num_labels). An evaluation label that the training file lacks is an error.
:attr:`DatasetInfo.label_names` records the original label of each id.

This module imports neither torch nor transformers at import time.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from service.core import env
from service.core.contract import PRESET_METRICS, DatasetSpec
from service.core.datasets import (
    DatasetFileError,
    Record,
    decode,
    detect_format,
    jsonl_records,
    table_records,
)
from workers.train.glue_metrics import MAIN_METRIC

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATA_ENV",
    "PRESET_TASKS",
    "DatasetError",
    "DatasetInfo",
    "Example",
    "Splits",
    "TaskInfo",
    "TokenizedDataset",
    "data_root",
    "epoch_permutation",
    "eval_shard",
    "load_examples",
    "load_splits",
    "num_global_batches",
    "resolve_file",
    "shard_indices",
    "tokenize",
]

DATA_ENV = env.DATA

Split = Literal["train", "eval"]
_SPLIT_NAMES: Mapping[str, Split] = {
    "train": "train",
    "eval": "eval",
    "dev": "eval",
    "validation": "eval",
}


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
    task_type: Literal["classification", "regression"]
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
    """Both splits of a dataset, validated together."""

    train: list[Example]
    eval: list[Example]
    info: DatasetInfo


# ---------------------------------------------------------------------------------------------
# GLUE presets
# ---------------------------------------------------------------------------------------------


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


def data_root() -> Path:
    """The folder holding ``glue/<TASK>/{train,dev}.tsv``.

    ``$CHILDTUNE_DATA`` when set; else ``<repo>/../shared/data``, else ``<repo>/shared/data``
    (``<repo>`` = the folder holding the ``workers`` package), whichever exists first.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DatasetError(f"{DATA_ENV}={env} is not a directory")
        return root
    repo = Path(__file__).resolve().parents[2]
    candidates = (repo.parent / "shared" / "data", repo / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"no data folder for the GLUE presets: set {DATA_ENV} to the folder that holds "
        f"glue/<TASK>/train.tsv and dev.tsv (looked in {', '.join(str(c) for c in candidates)})"
    )


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def _read_text(path: Path, encoding: str = "utf-8-sig") -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return decode(data, encoding)
    except DatasetFileError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _file_records(
    path: Path, text: str, fmt: str, columns: Sequence[str] | None = None
) -> tuple[list[str] | None, int, Iterator[Record]]:
    """The file's header, header line and records (``service.core.datasets``), errors naming ``path``."""
    try:
        if fmt == "jsonl":
            header, header_line, rows = None, 0, jsonl_records(text)
        else:
            header, header_line, rows = table_records(text, fmt, columns)
    except DatasetFileError as exc:
        raise DatasetError(f"{path}: {exc}") from None

    def checked() -> Iterator[Record]:
        try:
            yield from rows
        except DatasetFileError as exc:
            raise DatasetError(f"{path}: {exc}") from None

    return header, header_line, checked()


# ---------------------------------------------------------------------------------------------
# Row checks
# ---------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d+")


def _need_column(path: Path, line: int, record: Mapping[str, Any], column: str) -> Any:
    if column not in record:
        available = ", ".join(str(k) for k in record) or "none"
        raise DatasetError(f"{path}: line {line}: missing column {column!r}; available columns: {available}")
    return record[column]


def _text(path: Path, line: int, record: Mapping[str, Any], column: str) -> str:
    value = _need_column(path, line, record, column)
    if not isinstance(value, str):
        got = "null" if value is None else type(value).__name__
        raise DatasetError(f"{path}: line {line}: column {column!r} must be text (got {got})")
    if not value.strip():
        raise DatasetError(f"{path}: line {line}: empty text in column {column!r}")
    return value


def _regression_label(path: Path, line: int, value: Any, column: str) -> float:
    if isinstance(value, bool) or value is None:
        raise DatasetError(
            f"{path}: line {line}: label in column {column!r} must be a number for regression (got {value!r})"
        )
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{path}: line {line}: label {value!r} in column {column!r} is not a number "
            "(regression labels must be numbers)"
        ) from None
    if not math.isfinite(number):
        raise DatasetError(
            f"{path}: line {line}: label {value!r} in column {column!r} is not a finite number"
        )
    return number


def _class_key(path: Path, line: int, value: Any, column: str) -> str:
    """The text form of a classification label (integers normalised: ``"01"`` and ``1`` give ``"1"``)."""
    if isinstance(value, bool) or value is None:
        raise DatasetError(
            f"{path}: line {line}: label in column {column!r} must be an integer or a string (got {value!r})"
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        raise DatasetError(
            f"{path}: line {line}: label {value!r} in column {column!r} is not a class "
            "(classification labels are integers or strings; use task_type regression for numbers)"
        )
    if isinstance(value, str):
        key = value.strip()
        if not key:
            raise DatasetError(f"{path}: line {line}: empty label in column {column!r}")
        if _INT_RE.fullmatch(key):
            return str(int(key))
        if key.lower() in ("nan", "+nan", "-nan"):
            raise DatasetError(f"{path}: line {line}: label {value!r} in column {column!r} is NaN")
        return key
    raise DatasetError(
        f"{path}: line {line}: label in column {column!r} must be an integer or a string "
        f"(got {type(value).__name__})"
    )


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _normalise_split(split: str) -> Split:
    try:
        return _SPLIT_NAMES[split.lower()]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; allowed: train, eval (or dev)") from None


def resolve_file(ref: str, files_dir: str | Path | None = None) -> Path:
    """The path of a dataset file given as a path, or as an uploaded file id under ``files_dir``."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if files_dir is not None:
        candidate = Path(files_dir) / ref
        if candidate.is_file():
            return candidate
    where = f" (not a path, nor a file id under {files_dir})" if files_dir is not None else ""
    raise DatasetError(f"{ref}: file not found{where}")


def _preset_split(preset: _Preset, root: Path, split: Split) -> list[Example]:
    path = root / "glue" / preset.directory / ("train.tsv" if split == "train" else "dev.tsv")
    if not path.is_file():
        raise DatasetError(
            f"{path}: file not found (preset {preset.name}; set {DATA_ENV} to the folder holding glue/)"
        )
    text = _read_text(path, preset.encoding)
    _, _, records = _file_records(path, text, "tsv", preset.columns)
    label_ids = {value: i for i, value in enumerate(preset.label_values)}
    out: list[Example] = []
    for line, record in records:
        first = _text(path, line, record, preset.text_column)
        second = _text(path, line, record, preset.text_pair_column) if preset.text_pair_column else None
        raw = _need_column(path, line, record, preset.label_column)
        label: int | float
        if preset.task_type == "regression":
            label = _regression_label(path, line, raw, preset.label_column)
            if preset.label_range is not None:
                low, high = preset.label_range
                if not low <= label <= high:
                    raise DatasetError(
                        f"{path}: line {line}: label {raw!r} is outside {low:g}..{high:g} for {preset.name}"
                    )
        else:
            key = raw.strip()
            if key not in label_ids:
                raise DatasetError(
                    f"{path}: line {line}: label {raw!r} in column {preset.label_column!r} is not one of "
                    f"{', '.join(preset.label_values)}"
                )
            label = label_ids[key]
        out.append(Example(first, second, label, line))
    if not out:
        raise DatasetError(f"{path}: no data rows")
    return out


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


# A user row before label mapping: (line, text, pair, label key or regression value).
_Row = tuple[int, str, str | None, "str | float"]


def _user_rows(path: Path, spec: DatasetSpec) -> list[_Row]:
    assert spec.text_column is not None and spec.label_column is not None
    text = _read_text(path)
    if not text.strip():
        raise DatasetError(f"{path}: the file is empty")
    try:
        fmt = detect_format(path.name, text, spec.file_format)
    except DatasetFileError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    header, header_line, records = _file_records(path, text, fmt)
    if header is not None:
        for column in (spec.text_column, spec.text_pair_column, spec.label_column):
            if column is not None and column not in header:
                raise DatasetError(
                    f"{path}: line {header_line}: missing column {column!r}; "
                    f"available columns: {', '.join(header)}"
                )
    regression = spec.task_type == "regression"
    rows: list[_Row] = []
    for line, record in records:
        first = _text(path, line, record, spec.text_column)
        second = _text(path, line, record, spec.text_pair_column) if spec.text_pair_column else None
        raw = _need_column(path, line, record, spec.label_column)
        label: str | float = (
            _regression_label(path, line, raw, spec.label_column)
            if regression
            else _class_key(path, line, raw, spec.label_column)
        )
        rows.append((line, first, second, label))
    if not rows:
        raise DatasetError(f"{path}: no data rows")
    return rows


def _label_map(path: Path, spec: DatasetSpec, rows: Sequence[_Row]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Classification label ids from the training rows: (label -> id, names by id)."""
    keys = {str(row[3]) for row in rows}
    integers = all(_INT_RE.fullmatch(k) for k in keys)
    if spec.num_labels is not None and integers:
        for line, _, _, key in rows:
            if not 0 <= int(str(key)) < spec.num_labels:
                raise DatasetError(
                    f"{path}: line {line}: label {key} is outside 0..{spec.num_labels - 1} "
                    f"(num_labels is {spec.num_labels})"
                )
        names = tuple(str(i) for i in range(spec.num_labels))
        return {k: int(k) for k in keys}, names
    ordered = sorted(keys, key=int) if integers else sorted(keys)
    if spec.num_labels is not None and len(ordered) > spec.num_labels:
        raise DatasetError(
            f"{path}: {len(ordered)} distinct labels but num_labels is {spec.num_labels} "
            f"(labels: {', '.join(ordered[:20])}{', ...' if len(ordered) > 20 else ''})"
        )
    if spec.num_labels is None and len(ordered) < 2:
        raise DatasetError(
            f"{path}: classification needs at least 2 distinct labels in the training file "
            f"(found only {', '.join(repr(k) for k in ordered)})"
        )
    names = tuple(ordered)
    if spec.num_labels is not None:
        names += tuple(f"unused_{i}" for i in range(len(ordered), spec.num_labels))
    return {k: i for i, k in enumerate(ordered)}, names


def _user_splits(spec: DatasetSpec, files_dir: str | Path | None, want_eval: bool) -> Splits:
    assert spec.train_file is not None and spec.eval_file is not None
    assert spec.text_column is not None and spec.label_column is not None
    train_path = resolve_file(spec.train_file, files_dir)
    eval_path = resolve_file(spec.eval_file, files_dir)
    train_rows = _user_rows(train_path, spec)
    eval_rows = _user_rows(eval_path, spec) if want_eval else []
    metric = spec.effective_metric
    if spec.task_type == "regression":
        label_to_id: dict[str, int] = {}
        names: tuple[str, ...] = ()
        num_labels = 1
        train = [Example(t, p, float(lab), line) for line, t, p, lab in train_rows]
        evals = [Example(t, p, float(lab), line) for line, t, p, lab in eval_rows]
        task_type: Literal["classification", "regression"] = "regression"
    else:
        label_to_id, names = _label_map(train_path, spec, train_rows)
        num_labels = len(names)
        if metric == "f1" and num_labels != 2:
            raise DatasetError(
                f"{train_path}: metric f1 (of class 1) needs exactly 2 labels, found {num_labels}"
            )
        train = [Example(t, p, label_to_id[str(lab)], line) for line, t, p, lab in train_rows]
        evals = []
        for line, t, p, lab in eval_rows:
            if str(lab) not in label_to_id:
                raise DatasetError(
                    f"{eval_path}: line {line}: label {lab!r} does not occur in the training file "
                    f"(training labels: {', '.join(sorted(label_to_id, key=label_to_id.__getitem__))})"
                )
            evals.append(Example(t, p, label_to_id[str(lab)], line))
        task_type = "classification"
    info = DatasetInfo(
        name="custom",
        task_type=task_type,
        num_labels=num_labels,
        label_names=names,
        text_column=spec.text_column,
        text_pair_column=spec.text_pair_column,
        label_column=spec.label_column,
        metric=metric,
        main_metric=MAIN_METRIC[metric],
        label_to_id=label_to_id,
    )
    return Splits(train, evals, info)


def _truncate(examples: list[Example], limit: int | None) -> list[Example]:
    return examples if limit is None else examples[:limit]


def load_splits(
    spec: DatasetSpec, *, root: str | Path | None = None, files_dir: str | Path | None = None
) -> Splits:
    """Read and validate both splits (every row of both files), then apply ``max_*_examples``.

    ``root`` overrides :func:`data_root` for presets; ``files_dir`` is where uploaded file ids
    live (``<artifacts>/files``).
    """
    if spec.preset is not None:
        preset = PRESET_TASKS[spec.preset]
        base = Path(root) if root is not None else data_root()
        train = _preset_split(preset, base, "train")
        evals = _preset_split(preset, base, "eval")
        splits = Splits(train, evals, _preset_info(preset))
    else:
        splits = _user_splits(spec, files_dir, want_eval=True)
    return Splits(
        _truncate(splits.train, spec.max_train_examples),
        _truncate(splits.eval, spec.max_eval_examples),
        splits.info,
    )


def load_examples(
    spec: DatasetSpec,
    split: str,
    *,
    root: str | Path | None = None,
    files_dir: str | Path | None = None,
) -> tuple[list[Example], DatasetInfo]:
    """One split (``"train"`` or ``"eval"``; ``"dev"`` means eval) and the dataset's info.

    Every row of the split is validated; for user files the training file is always read as
    well (its labels define the label ids). ``max_train_examples`` / ``max_eval_examples`` keep
    the first n rows, after validation.
    """
    which = _normalise_split(split)
    if spec.preset is not None:
        preset = PRESET_TASKS[spec.preset]
        base = Path(root) if root is not None else data_root()
        examples = _preset_split(preset, base, which)
        info = _preset_info(preset)
    else:
        splits = _user_splits(spec, files_dir, want_eval=which == "eval")
        examples = splits.train if which == "train" else splits.eval
        info = splits.info
    limit = spec.max_train_examples if which == "train" else spec.max_eval_examples
    return _truncate(examples, limit), info


# ---------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------


class TokenizedDataset:
    """Token ids of every example, stored flat; batches are padded to their longest example.

    A map-style dataset (``len`` and integer indexing) usable with ``torch.utils.data.DataLoader``
    and :meth:`collate`, or directly through :meth:`batch`.
    """

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        token_type_ids: Sequence[Sequence[int]] | None,
        labels: Sequence[int | float],
        *,
        regression: bool,
        pad_token_id: int,
    ) -> None:
        import torch

        if len(input_ids) != len(labels):
            raise ValueError("input_ids and labels differ in length")
        lengths = torch.tensor([len(ids) for ids in input_ids], dtype=torch.long)
        self.offsets = torch.zeros(len(input_ids) + 1, dtype=torch.long)
        if len(input_ids):
            torch.cumsum(lengths, dim=0, out=self.offsets[1:])
        self.lengths = lengths
        self.input_ids = torch.tensor([t for ids in input_ids for t in ids], dtype=torch.long)
        self.token_type_ids = (
            torch.tensor([t for ids in token_type_ids for t in ids], dtype=torch.long)
            if token_type_ids is not None
            else None
        )
        self.labels = torch.tensor(list(labels), dtype=torch.float32 if regression else torch.long)
        self.regression = regression
        self.pad_token_id = int(pad_token_id)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        item = {
            "input_ids": self.input_ids[start:end],
            "attention_mask": torch.ones(end - start, dtype=torch.long),
            "labels": self.labels[index],
        }
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[start:end]
        return item

    def collate(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack items into a batch, right-padding to the longest (pad id, attention 0, type 0)."""
        import torch

        if not items:
            raise ValueError("cannot collate an empty batch")
        width = max(int(item["input_ids"].shape[0]) for item in items)
        n = len(items)
        batch = {
            "input_ids": torch.full((n, width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((n, width), dtype=torch.long),
        }
        has_types = "token_type_ids" in items[0]
        if has_types:
            batch["token_type_ids"] = torch.zeros((n, width), dtype=torch.long)
        for row, item in enumerate(items):
            size = int(item["input_ids"].shape[0])
            batch["input_ids"][row, :size] = item["input_ids"]
            batch["attention_mask"][row, :size] = 1
            if has_types:
                batch["token_type_ids"][row, :size] = item["token_type_ids"]
        batch["labels"] = torch.stack([item["labels"] for item in items])
        return batch

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The padded batch of the given example indices."""
        return self.collate([self[int(i)] for i in indices])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every example as one batch (padded to the longest): input_ids, attention_mask, ..."""
        return self.batch(range(len(self)))


def tokenize(
    examples: Sequence[Example],
    tokenizer: Any,
    max_seq_length: int,
    *,
    task_type: str | None = None,
    chunk_size: int = 2048,
) -> TokenizedDataset:
    """Tokenise examples (pairs as pairs) with a Hugging Face tokenizer, truncating to ``max_seq_length``.

    The result holds ``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer
    produces them, and ``labels`` (int64 for classification, float32 for regression). The task
    type is taken from ``task_type`` or, when None, from the labels' Python type.
    """
    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2 (got {max_seq_length})")
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has no pad token (pad_token_id is None); set one before tokenising")
    if task_type is None:
        regression = bool(examples) and isinstance(examples[0].label, float)
    else:
        regression = task_type == "regression"
    pairs = [ex.text_pair is not None for ex in examples]
    if any(pairs) and not all(pairs):
        raise ValueError("either every example has a text pair or none has")
    with_pairs = bool(pairs) and pairs[0]
    ids: list[list[int]] = []
    types: list[list[int]] | None = []
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        encoded = tokenizer(
            [ex.text for ex in chunk],
            [ex.text_pair or "" for ex in chunk] if with_pairs else None,
            truncation=True,
            max_length=max_seq_length,
            padding=False,
            return_attention_mask=False,
        )
        ids.extend(list(x) for x in encoded["input_ids"])
        if types is not None:
            if "token_type_ids" in encoded:
                types.extend(list(x) for x in encoded["token_type_ids"])
            else:
                types = None
    labels: list[int | float] = [float(ex.label) if regression else int(ex.label) for ex in examples]
    return TokenizedDataset(ids, types, labels, regression=regression, pad_token_id=pad)


# ---------------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"childtune/shuffle/{seed}/{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def epoch_permutation(num_examples: int, epoch: int, seed: int) -> list[int]:
    """The shuffled order of epoch ``epoch``: ``torch.randperm`` on a CPU generator keyed by (seed, epoch).

    The same on every rank and every machine with the same torch version.
    """
    import torch

    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0 (got {num_examples})")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(_epoch_seed(seed, epoch))
    return [int(i) for i in torch.randperm(num_examples, generator=generator).tolist()]


def num_global_batches(num_examples: int, global_batch_size: int) -> int:
    """Full global batches per epoch (the last partial batch is dropped)."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1 (got {global_batch_size})")
    return max(0, num_examples) // global_batch_size


def shard_indices(
    num_examples: int,
    epoch: int,
    seed: int,
    rank: int,
    world_size: int,
    global_batch_size: int,
) -> list[int]:
    """The example indices rank ``rank`` processes in epoch ``epoch``, batch after batch.

    The epoch's order is :func:`epoch_permutation`; it is cut into global batches of
    ``global_batch_size`` and rank ``r`` takes the ``r``-th contiguous slice of
    ``global_batch_size / world_size`` examples of EACH global batch. Consecutive runs of that
    many indices in the result are the rank's micro-batches. Whatever ``world_size``, the
    examples of global batch ``b`` are the same, so a run's batches do not depend on its
    topology.

    The last partial global batch is DROPPED (its examples differ from epoch to epoch, as the
    order is reshuffled): splitting it would give ranks unequal batches, whose averaged
    gradients would no longer equal the single-process batch mean. Fewer examples than one
    global batch give an empty list.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1 (got {world_size})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1} (got {rank})")
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be a positive multiple of "
            f"world_size ({world_size})"
        )
    per_rank = global_batch_size // world_size
    batches = num_global_batches(num_examples, global_batch_size)
    order = epoch_permutation(num_examples, epoch, seed)
    out: list[int] = []
    for b in range(batches):
        start = b * global_batch_size + rank * per_rank
        out.extend(order[start : start + per_rank])
    return out


def eval_shard(num_examples: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous part of an evaluation set (nothing dropped, nothing repeated).

    The parts differ in size by at most one; concatenated in rank order they are ``0..n-1``, so
    gathered predictions line up with the labels.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size (got rank {rank}, world_size {world_size})")
    base, extra = divmod(max(0, num_examples), world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
