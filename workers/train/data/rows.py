"""One dataset file's rows, read and checked: its text decoded, its records (csv, tsv or jsonl,
read by ``service.core.datasets``), and a row's text and label cells. Every error names the file
(an upload by its id: :func:`shown`), the 1-based line and the reason. Imports neither torch nor
transformers."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from service.core.datasets import (
    DatasetFileError,
    Record,
    decode,
    jsonl_records,
    table_records,
)
from service.core.records import valid_file_id
from workers.train.data.base import DatasetError

# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """How an error names a dataset file: an upload by its id (``file-...``), never by the
    server's folder that holds it; a path the caller gave, as given."""
    return path.name if valid_file_id(path.name) else str(path)


def read_text(path: Path, encoding: str = "utf-8-sig") -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{shown(path)}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{shown(path)}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return decode(data, encoding)
    except DatasetFileError as exc:
        raise DatasetError(f"{shown(path)}: {exc}") from None


def file_records(
    path: Path, text: str, fmt: str, columns: Sequence[str] | None = None
) -> tuple[list[str] | None, int, Iterator[Record]]:
    """The file's header, header line and records (``service.core.datasets``), errors naming ``path``."""
    try:
        if fmt == "jsonl":
            header, header_line, rows = None, 0, jsonl_records(text)
        else:
            header, header_line, rows = table_records(text, fmt, columns)
    except DatasetFileError as exc:
        raise DatasetError(f"{shown(path)}: {exc}") from None

    def checked() -> Iterator[Record]:
        try:
            yield from rows
        except DatasetFileError as exc:
            raise DatasetError(f"{shown(path)}: {exc}") from None

    return header, header_line, checked()


# ---------------------------------------------------------------------------------------------
# Row checks
# ---------------------------------------------------------------------------------------------

INT_RE = re.compile(r"[+-]?\d+")


def need_column(path: Path, line: int, record: Mapping[str, Any], column: str) -> Any:
    if column not in record:
        available = ", ".join(str(k) for k in record) or "none"
        raise DatasetError(
            f"{shown(path)}: line {line}: missing column {column!r}; available columns: {available}"
        )
    return record[column]


def text_cell(path: Path, line: int, record: Mapping[str, Any], column: str) -> str:
    value = need_column(path, line, record, column)
    if not isinstance(value, str):
        got = "null" if value is None else type(value).__name__
        raise DatasetError(f"{shown(path)}: line {line}: column {column!r} must be text (got {got})")
    if not value.strip():
        raise DatasetError(f"{shown(path)}: line {line}: empty text in column {column!r}")
    return value


def _no_bool_or_null(path: Path, line: int, value: Any, column: str, expected: str) -> None:
    if isinstance(value, bool) or value is None:
        raise DatasetError(
            f"{shown(path)}: line {line}: label in column {column!r} must be {expected} (got {value!r})"
        )


def regression_label(path: Path, line: int, value: Any, column: str) -> float:
    _no_bool_or_null(path, line, value, column, "a number for regression")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{shown(path)}: line {line}: label {value!r} in column {column!r} is not a number "
            "(regression labels must be numbers)"
        ) from None
    if not math.isfinite(number):
        raise DatasetError(
            f"{shown(path)}: line {line}: label {value!r} in column {column!r} is not a finite number"
        )
    return number


def class_key(path: Path, line: int, value: Any, column: str) -> str:
    """The text form of a classification label (integers normalised: ``"01"`` and ``1`` give ``"1"``)."""
    _no_bool_or_null(path, line, value, column, "an integer or a string")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        raise DatasetError(
            f"{shown(path)}: line {line}: label {value!r} in column {column!r} is not a class "
            "(classification labels are integers or strings; use task_type regression for numbers)"
        )
    if isinstance(value, str):
        key = value.strip()
        if not key:
            raise DatasetError(f"{shown(path)}: line {line}: empty label in column {column!r}")
        if INT_RE.fullmatch(key):
            return str(int(key))
        if key.lower() in ("nan", "+nan", "-nan"):
            raise DatasetError(f"{shown(path)}: line {line}: label {value!r} in column {column!r} is NaN")
        return key
    raise DatasetError(
        f"{shown(path)}: line {line}: label in column {column!r} must be an integer or a string "
        f"(got {type(value).__name__})"
    )
