"""Dataset files: the one reader of their formats, for upload checks and for the training program.

- ``tsv``: tab-separated, header row, NO quoting (``csv.QUOTE_NONE``, as GLUE's files): a
  quote character is ordinary text and a field cannot hold a tab or a newline.
- ``csv``: comma-separated, header row, standard quoting (a quoted field may hold commas,
  quotes as ``""`` and newlines; errors then name the line where the record starts).
- ``jsonl``: one JSON object per line.

Blank lines are skipped everywhere. Files are UTF-8; a leading byte-order mark is ignored.
The format comes from the caller, else the file name's extension (``.csv``, ``.tsv``,
``.jsonl``/``.ndjson``/``.json``), else the content (``{`` first: jsonl; a tab in the first
line: tsv; else csv) — uploaded files are stored without an extension.

Errors are :class:`DatasetFileError` naming the 1-based line and the reason; the training
program (``workers.train.data``) puts the file's path in front. Standard library only: the
API imports this module.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FORMATS",
    "DatasetFileError",
    "FileSummary",
    "Record",
    "decode",
    "detect_format",
    "inspect_file",
    "jsonl_records",
    "records",
    "table_records",
]

FORMATS = ("csv", "tsv", "jsonl")

Record = tuple[int, Mapping[str, Any]]  # (1-based line where the record starts, column -> value)


class DatasetFileError(ValueError):
    """A dataset file that cannot be read (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class FileSummary:
    format: str
    columns: list[str]
    num_rows: int


def decode(data: bytes, encoding: str = "utf-8-sig") -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetFileError(f"line {line}: not valid UTF-8 text ({exc.reason})") from None


def detect_format(filename: str, text: str, given: str | None = None) -> str:
    """The format of a file from ``given``, else its name's extension, else its first non-blank line."""
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
    first = next((line for line in _lines(text) if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "tsv" if "\t" in first else "csv"


def _lines(text: str) -> Iterator[str]:
    """Lines split at ``\\n`` only, endings kept (``str.splitlines`` also splits at U+2028 etc.)."""
    parts = text.split("\n")
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if i < last:
            yield part + "\n"
        elif part:
            yield part


def table_records(
    text: str, fmt: str, columns: Sequence[str] | None = None
) -> tuple[list[str], int, Iterator[Record]]:
    """Header, its line (0 when ``columns`` names the fields of a header-less file) and records."""
    kind = "tab-separated" if fmt == "tsv" else "comma-separated"
    if fmt == "tsv":
        reader = csv.reader(_lines(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(_lines(text), delimiter=",", quoting=csv.QUOTE_MINIMAL)

    def next_row() -> tuple[int, list[str]] | None:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                raise DatasetFileError(f"line {start}: malformed {fmt.upper()} ({exc})") from None
            if len(row) > 1 or (row and row[0].strip()):  # a blank or whitespace-only line is skipped
                return start, row

    if columns is None:
        first = next_row()
        if first is None:
            raise DatasetFileError("the file is empty (no header row and no data rows)")
        header_line, header = first[0], [name.strip() for name in first[1]]
        duplicates = sorted({n for n in header if header.count(n) > 1})
        if duplicates:
            raise DatasetFileError(
                f"line {header_line}: column {duplicates[0]!r} appears twice in the header"
            )
        if any(not name for name in header):
            raise DatasetFileError(f"line {header_line}: the header has an empty column name")
    else:
        header_line, header = 0, list(columns)

    def rows() -> Iterator[Record]:
        while (item := next_row()) is not None:
            line, row = item
            if len(row) != len(header):
                names = ", ".join(header)
                raise DatasetFileError(
                    f"line {line}: expected {len(header)} {kind} fields ({names}), found {len(row)}"
                )
            yield line, dict(zip(header, row, strict=True))

    return header, header_line, rows()


def jsonl_records(text: str) -> Iterator[Record]:
    if text.lstrip().startswith("["):
        raise DatasetFileError("line 1: a JSON array; expected JSON Lines (one object per line)")
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
        except (ValueError, RecursionError) as exc:  # a number of > 4300 digits, deep nesting
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0][:120]
            raise DatasetFileError(f"line {number}: unreadable JSON ({reason})") from None
        if not isinstance(obj, dict):
            kind = "a list" if isinstance(obj, list) else type(obj).__name__
            raise DatasetFileError(f"line {number}: expected a JSON object, got {kind}")
        yield number, obj


def records(text: str, fmt: str) -> tuple[list[str] | None, int, Iterator[Record]]:
    """(header or None for jsonl, header line, records) of a file's text in format ``fmt``."""
    if fmt == "jsonl":
        return None, 0, jsonl_records(text)
    return table_records(text, fmt)


def inspect_file(path: Path, filename: str, given_format: str | None = None) -> FileSummary:
    """Read a whole uploaded file: its format, its columns (for jsonl, the keys every row has), its rows."""
    text = decode(path.read_bytes())
    fmt = detect_format(filename, text, given_format)
    header, _, rows = records(text, fmt)
    columns: list[str] | None = header
    num_rows = 0
    for _, record in rows:
        if header is None:
            keys = [str(k) for k in record]
            columns = keys if columns is None else [c for c in columns if c in record]
        num_rows += 1
    if columns is None:
        raise DatasetFileError("the file is empty (no JSON lines)")
    if num_rows == 0:
        raise DatasetFileError("the file has a header but no data rows")
    return FileSummary(format=fmt, columns=columns, num_rows=num_rows)
