"""Dataset files: the one reader of their formats, for upload checks and for the training program.

- ``tsv``: tab-separated, header row, NO quoting (``csv.QUOTE_NONE``, as GLUE's files): a
  quote character is ordinary text and a field cannot hold a tab or a newline.
- ``csv``: comma-separated, header row, standard quoting (a quoted field may hold commas,
  quotes as ``""`` and newlines; errors then name the line where the record starts).
- ``jsonl``: one JSON object per line. Causal-lm (instruction) files are jsonl in one of two
  *layouts*, fixed by the first row and checked on every row (:func:`sft_row`):
  ``{"prompt": str, "completion": str}`` or ``{"messages": [{"role", "content"}, ...]}``
  (roles system, user, assistant; system turns first; at least one assistant turn with text,
  after a user turn). Any other file has the layout ``table``.

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
    "CHAT_ROLES",
    "FORMATS",
    "LAYOUTS",
    "DatasetFileError",
    "FileSummary",
    "Record",
    "SftRow",
    "decode",
    "detect_format",
    "inspect_file",
    "jsonl_records",
    "records",
    "sft_layout",
    "sft_row",
    "sft_rows",
    "table_records",
]

FORMATS = ("csv", "tsv", "jsonl")
# How a file's rows are shaped: columns (``table``, for classification and regression), or
# instruction data for causal-lm (``prompt-completion``, ``chat``).
LAYOUTS = ("table", "prompt-completion", "chat")
CHAT_ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 1000

Record = tuple[int, Mapping[str, Any]]  # (1-based line where the record starts, column -> value)


class DatasetFileError(ValueError):
    """A dataset file that cannot be read (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class FileSummary:
    format: str
    columns: list[str]
    num_rows: int
    layout: str = "table"


@dataclass(frozen=True, slots=True)
class SftRow:
    """One checked causal-lm row: a prompt and its completion, or a conversation."""

    line: int  # 1-based line of the file
    prompt: str | None = None
    completion: str | None = None
    messages: tuple[tuple[str, str], ...] = ()  # (role, content), for chat rows

    @property
    def layout(self) -> str:
        return "chat" if self.messages else "prompt-completion"

    @property
    def reference(self) -> str:
        """The answer the model should give: the completion, or the last assistant turn."""
        if not self.messages:
            return self.completion or ""
        return next(content for role, content in reversed(self.messages) if role == "assistant")

    @property
    def question(self) -> str:
        """What is asked: the prompt, or the last user turn before the last assistant turn."""
        if not self.messages:
            return self.prompt or ""
        last = max(i for i, (role, _) in enumerate(self.messages) if role == "assistant")
        return next((c for role, c in reversed(self.messages[:last]) if role == "user"), "")


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


def sft_layout(record: Mapping[str, Any]) -> str | None:
    """``chat`` for a row with ``messages``, ``prompt-completion`` for one with both of those
    keys, else None (a table row)."""
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean"}.get(type(value), "a number")


def sft_row(line: int, record: Mapping[str, Any], layout: str) -> SftRow:
    """Check one causal-lm row of the file's ``layout``; :class:`DatasetFileError` names the line."""
    found = sft_layout(record)
    if found != layout:
        what = f"a {found} row" if found else "neither prompt/completion nor messages"
        expected = '{"messages": [...]}' if layout == "chat" else '{"prompt": ..., "completion": ...}'
        raise DatasetFileError(
            f"line {line}: {what}, but the file's first row made it {layout}: every row must be {expected}"
        )
    if layout == "prompt-completion":
        if "messages" in record:
            raise DatasetFileError(f"line {line}: give prompt/completion or messages, not both")
        prompt, completion = record["prompt"], record["completion"]
        for key, value in (("prompt", prompt), ("completion", completion)):
            if not isinstance(value, str):
                raise DatasetFileError(f"line {line}: {key} must be text (got {_kind(value)})")
        if not completion.strip():
            raise DatasetFileError(f"line {line}: empty completion (nothing to learn from the row)")
        return SftRow(line, prompt=prompt, completion=completion)
    for key in ("prompt", "completion"):
        if key in record:
            raise DatasetFileError(f"line {line}: give messages or prompt/completion, not both ({key!r})")
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else _kind(messages)
        raise DatasetFileError(f"line {line}: messages must be a non-empty list of turns (got {got})")
    if len(messages) > MAX_MESSAGES:
        raise DatasetFileError(f"line {line}: {len(messages)} messages, more than {MAX_MESSAGES}")
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        where = f"line {line}: messages[{i}]"
        if not isinstance(message, dict):
            raise DatasetFileError(
                f'{where} must be an object {{"role": ..., "content": ...}} (got {_kind(message)})'
            )
        unknown = sorted(str(k) for k in message if k not in ("role", "content", "name"))
        if unknown:
            raise DatasetFileError(f"{where}: unknown key {unknown[0]!r} (a turn has role and content)")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            shown = repr(role) if isinstance(role, str) else _kind(role)
            raise DatasetFileError(f"{where}.role must be one of {', '.join(CHAT_ROLES)} (got {shown})")
        if not isinstance(content, str):
            raise DatasetFileError(f"{where}.content must be text (got {_kind(content)})")
        if role == "system" and any(r != "system" for r, _ in turns):
            raise DatasetFileError(f"{where}: a system turn must come before the conversation starts")
        if role == "assistant":
            if not content.strip():
                raise DatasetFileError(f"{where}: an assistant turn with no text")
            if not any(r == "user" for r, _ in turns):
                raise DatasetFileError(f"{where}: an assistant turn before any user turn")
        turns.append((role, content))
    if not any(r == "assistant" for r, _ in turns):
        raise DatasetFileError(f"line {line}: no assistant turn (the model learns from assistant turns)")
    return SftRow(line, messages=tuple(turns))


def sft_rows(text: str) -> tuple[str, Iterator[SftRow]]:
    """The layout of a causal-lm jsonl file (from its first row) and its checked rows."""
    rows = jsonl_records(text)
    first = next(rows, None)
    if first is None:
        raise DatasetFileError("the file is empty (no JSON lines)")
    layout = sft_layout(first[1])
    if layout is None:
        keys = ", ".join(repr(str(k)) for k in first[1]) or "none"
        raise DatasetFileError(
            f'line {first[0]}: a causal-lm row is {{"prompt": ..., "completion": ...}} or '
            f'{{"messages": [...]}} (found keys: {keys})'
        )

    def checked() -> Iterator[SftRow]:
        yield sft_row(first[0], first[1], layout)
        for line, record in rows:
            yield sft_row(line, record, layout)

    return layout, checked()


def inspect_file(path: Path, filename: str, given_format: str | None = None) -> FileSummary:
    """Read a whole uploaded file: its format, its columns (for jsonl, the keys every row has), its
    rows, and its layout (causal-lm rows are checked in full: :func:`sft_row`)."""
    text = decode(path.read_bytes())
    fmt = detect_format(filename, text, given_format)
    header, _, rows = records(text, fmt)
    columns: list[str] | None = header
    num_rows = 0
    layout: str | None = None
    for line, record in rows:
        if header is None:
            keys = [str(k) for k in record]
            columns = keys if columns is None else [c for c in columns if c in record]
            if num_rows == 0:
                layout = sft_layout(record)
            if layout is not None:
                sft_row(line, record, layout)
        num_rows += 1
    if columns is None:
        raise DatasetFileError("the file is empty (no JSON lines)")
    if num_rows == 0:
        raise DatasetFileError("the file has a header but no data rows")
    return FileSummary(format=fmt, columns=columns, num_rows=num_rows, layout=layout or "table")
