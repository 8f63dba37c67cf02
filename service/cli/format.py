"""How the CLI writes one value: a number (:func:`fmt_number`, the only number format of the
CLI's output), a time, a line of a model's text, a causal-lm job's ``data`` and ``samples``
events. Pure functions of their arguments; the tables built from them are in
:mod:`service.cli.tables`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["data_text", "fmt_number", "fmt_time", "one_line", "samples_lines"]


def fmt_number(
    value: Any, digits: int = 4, *, signed: bool = False, significant: bool = False, none: str = "-"
) -> str:
    """A number with ``digits`` decimals, as the scores are shown (0.6650; +0.0450 where
    ``signed``). With ``significant``, a float with ``digits`` significant digits (0.0005123,
    1.235e+05) and an int whole (a step, a count), as the metrics and masks are shown. None
    shows ``none``; a bool or anything else that is not a number shows as ``str(value)``."""
    if value is None:
        return none
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    sign = "+" if signed else ""
    if not significant:
        return f"{value:{sign}.{digits}f}"
    return f"{value:{sign}.{digits}g}" if isinstance(value, float) else f"{value:{sign}d}"


def fmt_time(ts: float | None) -> str:
    """A timestamp (seconds since the epoch) in local time, "2023-11-14 22:13:20"; none: "-"."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def one_line(text: Any, limit: int = 100, *, tail: bool = False) -> str:
    """``text`` on one line: newlines shown as ``\\n``, tabs as spaces, other control characters
    (a terminal escape in a model's answer) escaped; cut to about ``limit`` characters (its end
    kept where ``tail``, as for a prompt, whose question is at its end)."""
    raw = "" if text is None else str(text)
    raw = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    out = "".join(
        "\\n" if c == "\n" else c if unicodedata.category(c) != "Cc" else f"\\x{ord(c):02x}" for c in raw
    )
    if len(out) > limit:
        out = "..." + out[-(limit - 3) :] if tail else out[: limit - 3] + "..."
    return out if out else '""'


def _split_counts(name: str, counts: Any) -> str:
    """One split of a ``data`` event: ``train 80 rows (2 truncated, 1 dropped: too long)``."""
    if not isinstance(counts, Mapping):
        return f"{name} -"
    rows, kept = counts.get("rows"), counts.get("kept")
    text = f"{name} {kept} rows" if kept == rows or rows is None else f"{name} {kept} of {rows} rows"
    notes = []
    if counts.get("truncated"):
        notes.append(f"{counts['truncated']} truncated")
    if counts.get("dropped_overlong"):
        notes.append(f"{counts['dropped_overlong']} dropped: too long")
    if counts.get("dropped_no_target"):
        notes.append(f"{counts['dropped_no_target']} dropped: no completion token left")
    lines = counts.get("first_dropped_lines") or []
    if lines:
        notes.append("first dropped at line " + ", ".join(str(n) for n in lines[:5]))
    return text + (f" ({'; '.join(notes)})" if notes else "")


def data_text(record: Mapping[str, Any]) -> str:
    """A causal-lm job's ``data`` event as one line (without the ``data:`` prefix)."""
    parts = [_split_counts("train", record.get("train")), _split_counts("eval", record.get("eval"))]
    train = record.get("train")
    tokens = train.get("target_tokens") if isinstance(train, Mapping) else None
    if tokens is not None:
        parts.append(f"{tokens} target tokens")
    if record.get("max_seq_length") is not None:
        parts.append(f"max {record['max_seq_length']} tokens (overlong: {record.get('overlong', '?')})")
    if "chat_template" in record:
        parts.append(f"chat template {'on' if record.get('chat_template') else 'off'}")
    return ", ".join(parts)


def samples_lines(record: Mapping[str, Any], limit: int = 100) -> list[str]:
    """A ``samples`` event: a heading and, per sample, its prompt and the answer beside the reference."""
    step = record.get("step")
    when = "before training (step 0)" if step == 0 else f"at step {step}"
    lines = [f"samples {when}:"]
    for sample in record.get("samples") or []:
        lines.append(f"  prompt: {one_line(sample.get('prompt'), limit, tail=True)}")
        lines.append(
            f"  answer: {one_line(sample.get('answer'), limit)}  "
            f"(reference: {one_line(sample.get('reference'), limit)})"
        )
    return lines
