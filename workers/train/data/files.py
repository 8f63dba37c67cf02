"""Reading a dataset's files: every row checked, columns and labels mapped, into :class:`Example` lists.

:func:`load_examples` / :func:`load_splits` read a :class:`~service.core.contract.DatasetSpec`
(a GLUE preset of ``workers.train.data.presets`` or the user's files) into :class:`Example`
lists and a :class:`DatasetInfo`. Every row of both files is checked first; the first problem
raises :class:`DatasetError` naming the file, the 1-based line and the reason.

File formats (csv, tsv, jsonl; detection, quoting, encoding) are read by ``service.core.datasets``,
the one reader the API's upload checks use too; ``rows`` checks each row and names the file in
front of every error (an upload by its id).
JSONL text fields must be strings.

Labels of user files: regression labels are finite numbers. Classification labels are
integers or strings, collected from the TRAINING file: when all are integers they sort
numerically, else as strings, and ids are positions in that order (so integer labels
0..k-1 keep their values); with ``num_labels`` given and integer labels, a label IS its id
(0 <= label < num_labels). An evaluation label that the training file lacks is an error.
:attr:`DatasetInfo.label_names` records the original label of each id.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from service.core import env
from service.core.contract import DatasetSpec
from service.core.datasets import (
    DatasetFileError,
    SftRow,
    detect_format,
    sft_rows,
)
from workers.train.data.base import DatasetError, DatasetInfo, Example, Splits
from workers.train.data.presets import (
    INSTRUCT_PRESETS,
    PRESET_TASKS,
    _Preset,
    _preset_info,
    data_root,
    instruct_info,
    instruct_row,
)
from workers.train.data.rows import (
    INT_RE,
    class_key,
    file_records,
    need_column,
    read_text,
    regression_label,
    shown,
    text_cell,
)
from workers.train.glue_metrics import MAIN_METRIC

Split = Literal["train", "eval"]
_SPLIT_NAMES: Mapping[str, Split] = {
    "train": "train",
    "eval": "eval",
    "dev": "eval",
    "validation": "eval",
}


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
            f"{shown(path)}: file not found (preset {preset.name}; set {env.DATA} to the folder holding "
            "glue/)"
        )
    text = read_text(path, preset.encoding)
    _, _, records = file_records(path, text, "tsv", preset.columns)
    label_ids = {value: i for i, value in enumerate(preset.label_values)}
    out: list[Example] = []
    for line, record in records:
        first = text_cell(path, line, record, preset.text_column)
        second = text_cell(path, line, record, preset.text_pair_column) if preset.text_pair_column else None
        raw = need_column(path, line, record, preset.label_column)
        label: int | float
        if preset.task_type == "regression":
            label = regression_label(path, line, raw, preset.label_column)
            if preset.label_range is not None:
                low, high = preset.label_range
                if not low <= label <= high:
                    raise DatasetError(
                        f"{shown(path)}: line {line}: label {raw!r} is outside {low:g}..{high:g} "
                        f"for {preset.name}"
                    )
        else:
            key = raw.strip()
            if key not in label_ids:
                raise DatasetError(
                    f"{shown(path)}: line {line}: label {raw!r} in column {preset.label_column!r} "
                    "is not one of "
                    f"{', '.join(preset.label_values)}"
                )
            label = label_ids[key]
        out.append(Example(first, second, label, line))
    if not out:
        raise DatasetError(f"{shown(path)}: no data rows")
    return out


# A user row before label mapping: (line, text, pair, label key or regression value).
_Row = tuple[int, str, str | None, "str | float"]


def _user_rows(path: Path, spec: DatasetSpec) -> list[_Row]:
    assert spec.text_column is not None and spec.label_column is not None
    text = read_text(path)
    if not text.strip():
        raise DatasetError(f"{shown(path)}: the file is empty")
    try:
        fmt = detect_format(path.name, text, spec.file_format)
    except DatasetFileError as exc:
        raise DatasetError(f"{shown(path)}: {exc}") from None
    header, header_line, records = file_records(path, text, fmt)
    if header is not None:
        for column in (spec.text_column, spec.text_pair_column, spec.label_column):
            if column is not None and column not in header:
                raise DatasetError(
                    f"{shown(path)}: line {header_line}: missing column {column!r}; "
                    f"available columns: {', '.join(header)}"
                )
    regression = spec.task_type == "regression"
    rows: list[_Row] = []
    for line, record in records:
        first = text_cell(path, line, record, spec.text_column)
        second = text_cell(path, line, record, spec.text_pair_column) if spec.text_pair_column else None
        raw = need_column(path, line, record, spec.label_column)
        label: str | float = (
            regression_label(path, line, raw, spec.label_column)
            if regression
            else class_key(path, line, raw, spec.label_column)
        )
        rows.append((line, first, second, label))
    if not rows:
        raise DatasetError(f"{shown(path)}: no data rows")
    return rows


def _label_map(path: Path, spec: DatasetSpec, rows: Sequence[_Row]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Classification label ids from the training rows: (label -> id, names by id)."""
    keys = {str(row[3]) for row in rows}
    integers = all(INT_RE.fullmatch(k) for k in keys)
    if spec.num_labels is not None and integers:
        for line, _, _, key in rows:
            if not 0 <= int(str(key)) < spec.num_labels:
                raise DatasetError(
                    f"{shown(path)}: line {line}: label {key} is outside 0..{spec.num_labels - 1} "
                    f"(num_labels is {spec.num_labels})"
                )
        names = tuple(str(i) for i in range(spec.num_labels))
        return {k: int(k) for k in keys}, names
    ordered = sorted(keys, key=int) if integers else sorted(keys)
    if spec.num_labels is not None and len(ordered) > spec.num_labels:
        raise DatasetError(
            f"{shown(path)}: {len(ordered)} distinct labels but num_labels is {spec.num_labels} "
            f"(labels: {', '.join(ordered[:20])}{', ...' if len(ordered) > 20 else ''})"
        )
    if spec.num_labels is None and len(ordered) < 2:
        raise DatasetError(
            f"{shown(path)}: classification needs at least 2 distinct labels in the training file "
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


def _sft_file(path: Path, spec: DatasetSpec) -> list[SftRow]:
    """Every row of a causal-lm jsonl file, checked (``service.core.datasets.sft_row``)."""
    text = read_text(path)
    if not text.strip():
        raise DatasetError(f"{shown(path)}: the file is empty")
    try:
        fmt = detect_format(path.name, text, spec.file_format)
        if fmt != "jsonl":
            raise DatasetFileError(
                f"causal-lm rows are JSON objects, one per line (jsonl); this file reads as {fmt}"
            )
        _, rows = sft_rows(text)
        return list(rows)
    except DatasetFileError as exc:
        raise DatasetError(f"{shown(path)}: {exc}") from None


def _sft_user_splits(spec: DatasetSpec, files_dir: str | Path | None, want_eval: bool) -> Splits:
    assert spec.train_file is not None and spec.eval_file is not None
    train = _sft_file(resolve_file(spec.train_file, files_dir), spec)
    evals = _sft_file(resolve_file(spec.eval_file, files_dir), spec) if want_eval else []
    layout = train[0].layout
    metric = spec.effective_metric
    info = DatasetInfo(
        name="custom",
        task_type="causal-lm",
        num_labels=0,
        label_names=(),
        text_column="messages" if layout == "chat" else "prompt",
        text_pair_column=None,
        label_column="messages" if layout == "chat" else "completion",
        metric=metric,
        main_metric=MAIN_METRIC[metric],
    )
    return Splits(train, evals, info)


def _instruct_split(name: str, root: Path, split: Split) -> list[SftRow]:
    preset = PRESET_TASKS[INSTRUCT_PRESETS[name].source]
    return [instruct_row(name, ex) for ex in _preset_split(preset, root, split)]


def _truncate(examples: Sequence[Any], limit: int | None) -> Sequence[Any]:
    return examples if limit is None else examples[:limit]


def subset_rows(count: int, limit: int, seed: int) -> list[int]:
    """The rows of a ``count``-row split that ``subset_seed`` ``seed`` keeps: the ``limit`` rows
    with the smallest keyed hash of (seed, row), in file order. A hash, not a library's random
    stream, so the same seed gives the same rows on any machine and any version."""

    def key(row: int) -> bytes:
        return hashlib.blake2b(f"childtune/subset/{seed}/{row}".encode(), digest_size=8).digest()

    return sorted(sorted(range(count), key=key)[:limit])


def _train_rows(examples: Sequence[Any], spec: DatasetSpec) -> Sequence[Any]:
    """``max_train_examples`` rows: the first ones, or a seeded draw (``subset_seed``)."""
    if spec.max_train_examples is None or spec.subset_seed is None:
        return _truncate(examples, spec.max_train_examples)
    return [examples[i] for i in subset_rows(len(examples), spec.max_train_examples, spec.subset_seed)]


def load_splits(
    spec: DatasetSpec, *, root: str | Path | None = None, files_dir: str | Path | None = None
) -> Splits:
    """Read and validate both splits (every row of both files), then apply ``max_*_examples``.

    ``root`` overrides :func:`data_root` for presets; ``files_dir`` is where uploaded file ids
    live (``<artifacts>/files``).
    """
    if spec.preset is not None and spec.preset in INSTRUCT_PRESETS:
        base = Path(root) if root is not None else data_root()
        train_rows = _instruct_split(spec.preset, base, "train")
        eval_rows = _instruct_split(spec.preset, base, "eval")
        splits = Splits(train_rows, eval_rows, instruct_info(spec.preset))
    elif spec.preset is not None:
        preset = PRESET_TASKS[spec.preset]
        base = Path(root) if root is not None else data_root()
        train = _preset_split(preset, base, "train")
        evals = _preset_split(preset, base, "eval")
        splits = Splits(train, evals, _preset_info(preset))
    elif spec.task_type == "causal-lm":
        splits = _sft_user_splits(spec, files_dir, want_eval=True)
    else:
        splits = _user_splits(spec, files_dir, want_eval=True)
    return Splits(
        _train_rows(splits.train, spec), _truncate(splits.eval, spec.max_eval_examples), splits.info
    )


def load_examples(
    spec: DatasetSpec,
    split: str,
    *,
    root: str | Path | None = None,
    files_dir: str | Path | None = None,
) -> tuple[Sequence[Any], DatasetInfo]:
    """One split (``"train"`` or ``"eval"``; ``"dev"`` means eval) and the dataset's info.

    Every row of the split is validated; for user files the training file is always read as
    well (its labels define the label ids). ``max_train_examples`` / ``max_eval_examples`` keep
    the first n rows (training: a seeded draw with ``subset_seed``), after validation.
    """
    which = _normalise_split(split)
    if spec.preset in INSTRUCT_PRESETS or spec.task_type == "causal-lm":
        both = load_splits(spec, root=root, files_dir=files_dir)
        return (both.train if which == "train" else both.eval), both.info
    examples: Sequence[Any]
    if spec.preset is not None:
        preset = PRESET_TASKS[spec.preset]
        base = Path(root) if root is not None else data_root()
        examples = _preset_split(preset, base, which)
        info = _preset_info(preset)
    else:
        splits = _user_splits(spec, files_dir, want_eval=which == "eval")
        examples = splits.train if which == "train" else splits.eval
        info = splits.info
    if which == "train":
        return _train_rows(examples, spec), info
    return _truncate(examples, spec.max_eval_examples), info
