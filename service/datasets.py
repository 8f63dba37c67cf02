"""Checking an uploaded dataset file: its format, its columns and its row count.

The rules are the training program's (``workers.train.data``): UTF-8 (a leading byte-order
mark ignored), blank lines skipped; ``tsv`` tab-separated with a header and no quoting;
``csv`` comma-separated with a header and standard quoting; ``jsonl`` one JSON object per line.
The format comes from the caller, else the file name's extension, else the content. The
columns of a jsonl file are the keys every row has.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FORMATS", "DatasetFileError", "FileSummary", "detect_format", "inspect_file"]

FORMATS = ("csv", "tsv", "jsonl")


class DatasetFileError(ValueError):
    """An uploaded file that the training program could not read (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class FileSummary:
    format: str
    columns: list[str]
    num_rows: int


def detect_format(filename: str, first_line: str, given: str | None = None) -> str:
    if given:
        if given not in FORMATS:
            raise DatasetFileError(f"unknown format {given!r}; use one of {', '.join(FORMATS)}")
        return given
    suffix = Path(filename).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if first_line.lstrip().startswith("{"):
        return "jsonl"
    return "tsv" if "\t" in first_line else "csv"


def _lines(text: str) -> Iterator[str]:
    parts = text.split("\n")
    for i, part in enumerate(parts):
        if i < len(parts) - 1:
            yield part + "\n"
        elif part:
            yield part


def _table(text: str, fmt: str) -> tuple[list[str], int]:
    kind = "tab-separated" if fmt == "tsv" else "comma-separated"
    if fmt == "tsv":
        reader = csv.reader(_lines(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(_lines(text), delimiter=",", quoting=csv.QUOTE_MINIMAL)
    header: list[str] | None = None
    num_rows = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetFileError(f"line {start}: malformed {fmt.upper()} ({exc})") from None
        if not (len(row) > 1 or (row and row[0].strip())):
            continue
        if header is None:
            header = [name.strip() for name in row]
            duplicates = sorted({n for n in header if header.count(n) > 1})
            if duplicates:
                raise DatasetFileError(f"line {start}: column {duplicates[0]!r} appears twice in the header")
            if any(not name for name in header):
                raise DatasetFileError(f"line {start}: the header has an empty column name")
            continue
        if len(row) != len(header):
            raise DatasetFileError(
                f"line {start}: expected {len(header)} {kind} fields ({', '.join(header)}), found {len(row)}"
            )
        num_rows += 1
    if header is None:
        raise DatasetFileError("the file is empty (no header row and no data rows)")
    return header, num_rows


def _jsonl(text: str) -> tuple[list[str], int]:
    columns: list[str] | None = None
    num_rows = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFileError(
                f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise DatasetFileError(f"line {number}: expected a JSON object, got {type(obj).__name__}")
        keys = [str(k) for k in obj]
        columns = keys if columns is None else [c for c in columns if c in obj]
        num_rows += 1
    if columns is None:
        raise DatasetFileError("the file is empty (no JSON lines)")
    return columns, num_rows


def inspect_file(path: Path, filename: str, given_format: str | None = None) -> FileSummary:
    """Read a whole uploaded file and return its format, columns and number of data rows."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetFileError(f"line {line}: not valid UTF-8 text ({exc.reason})") from None
    first = next((line for line in io.StringIO(text) if line.strip()), "")
    fmt = detect_format(filename, first, given_format)
    columns, num_rows = _jsonl(text) if fmt == "jsonl" else _table(text, fmt)
    if num_rows == 0:
        raise DatasetFileError("the file has a header but no data rows")
    return FileSummary(format=fmt, columns=columns, num_rows=num_rows)
