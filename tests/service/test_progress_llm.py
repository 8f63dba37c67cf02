"""How the CLI prints a causal-lm job's own events: the ``data`` event (rows kept, truncated,
dropped) as one line and each ``samples`` event (greedy answers at an evaluation) as a short
block, through :class:`ProgressView` (``childtune train|watch|submit --wait``) with and without
a progress bar, and in ``childtune events``."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from service.cli import commands
from service.cli.format import one_line
from service.cli.progress import ProgressView

DATA: dict[str, Any] = {
    "type": "data",
    "overlong": "truncate",
    "chat_template": True,
    "max_seq_length": 64,
    "train": {
        "rows": 81,
        "kept": 80,
        "truncated": 2,
        "dropped_overlong": 0,
        "dropped_no_target": 1,
        "target_tokens": 268,
        "first_dropped_lines": [17],
    },
    "eval": {
        "rows": 20,
        "kept": 20,
        "truncated": 0,
        "dropped_overlong": 0,
        "dropped_no_target": 0,
        "target_tokens": 61,
        "first_dropped_lines": [],
    },
    "time": 1700000000.0,
    "seq": 2,
}
DATA_LINE = (
    "data: train 80 of 81 rows (2 truncated; 1 dropped: no completion token left; first dropped at line 17), "
    "eval 20 rows, 268 target tokens, max 64 tokens (overlong: truncate), chat template on"
)

SAMPLES: dict[str, Any] = {
    "type": "samples",
    "step": 3,
    "samples": [
        {"prompt": "8+0=", "reference": "8", "answer": "8"},
        {"prompt": "Review: fine\nSentiment:", "reference": "positive", "answer": "pos\tit\x1b[2Jive\n\n"},
        {"prompt": "x" * 150 + "END", "reference": "r" * 150, "answer": ""},
    ],
    "time": 1700000010.0,
    "seq": 12,
}
SAMPLES_BLOCK = [
    "samples at step 3:",
    "  prompt: 8+0=",
    "  answer: 8  (reference: 8)",
    "  prompt: Review: fine\\nSentiment:",
    "  answer: pos it\\x1b[2Jive\\n\\n  (reference: positive)",
    "  prompt: ..." + "x" * 94 + "END",
    '  answer: ""  (reference: ' + "r" * 97 + "...)",
]


def _lines(view: ProgressView) -> list[str]:
    assert isinstance(view.file, io.StringIO)
    return view.file.getvalue().splitlines()


def test_one_line_shows_newlines_escapes_control_characters_and_cuts_long_text() -> None:
    assert one_line("a\r\nb\nc\rd") == "a\\nb\\nc\\nd"
    assert one_line("\x07bell\x7f") == "\\x07bell\\x7f"
    assert one_line("") == '""' and one_line(None) == '""'
    assert one_line("é" * 100) == "é" * 100  # not cut: exactly the limit
    assert one_line("a" * 101) == "a" * 97 + "..." and len(one_line("a" * 500)) == 100
    assert one_line("a" * 200 + "?", tail=True) == "..." + "a" * 96 + "?"


def test_a_data_event_prints_one_line() -> None:
    view = ProgressView(io.StringIO(), interactive=False)
    view.event(DATA)
    assert _lines(view) == [DATA_LINE]


def test_a_data_event_with_nothing_left_out() -> None:
    view = ProgressView(io.StringIO(), interactive=False)
    clean = {**DATA["train"], "rows": 80, "truncated": 0, "dropped_no_target": 0, "first_dropped_lines": []}
    view.event({**DATA, "train": clean, "chat_template": False, "overlong": "drop"})
    assert _lines(view) == [
        "data: train 80 rows, eval 20 rows, 268 target tokens, max 64 tokens (overlong: drop), "
        "chat template off"
    ]


def test_a_samples_event_prints_a_block_each_text_on_one_line() -> None:
    view = ProgressView(io.StringIO(), interactive=False)
    view.event(SAMPLES)
    view.event({**SAMPLES, "step": 0, "samples": SAMPLES["samples"][:1]})
    assert _lines(view) == [*SAMPLES_BLOCK, "samples before training (step 0):", *SAMPLES_BLOCK[1:3]]


def test_causal_lm_eval_metrics_print_with_perplexity_as_the_main_metric() -> None:
    view = ProgressView(io.StringIO(), interactive=False)
    view.metric(
        {
            "kind": "eval",
            "step": 3,
            "eval_loss": 1.5,
            "eval_perplexity": 4.4817,
            "eval_token_accuracy": 0.25,
            "eval_tokens": 61,
            "main_metric": "eval_perplexity",
            "main_value": 4.4817,
            "is_best": True,
        }
    )
    assert _lines(view) == [
        "eval at step 3: loss 1.5, perplexity 4.482, token_accuracy 0.25, tokens 61  (best)"
    ]
    assert view.eval_text == "perplexity=4.482"


def test_samples_print_above_the_training_bar_without_breaking_it() -> None:
    """On a terminal the block goes through tqdm.write: the bar is cleared, the block written
    whole (no bar text inside it), and the bar drawn again below it."""
    out = io.StringIO()
    view = ProgressView(out, interactive=True)
    view.event({"type": "started", "total_steps": 10, "world_size": 1, "zero_stage": 2, "device": "cpu"})
    view.event(DATA)  # before any bar: a plain line
    view.metric({"kind": "train", "step": 2, "loss": 2.5, "total_steps": 10})
    assert view.bar is not None
    view.event(SAMPLES)
    view.metric({"kind": "train", "step": 3, "loss": 2.25, "total_steps": 10})
    view.close()
    text = out.getvalue()
    assert DATA_LINE + "\n" in text
    assert "\n".join(SAMPLES_BLOCK) + "\n" in text
    # Before the block, the bar's line was cleared (a carriage return, then the block at column 0).
    before = text[: text.index(SAMPLES_BLOCK[0])]
    assert re.search(r"\rtraining: .*/10", before) and before.endswith("\r")
    after = text[text.index(SAMPLES_BLOCK[-1]) + len(SAMPLES_BLOCK[-1]) :]
    assert re.search(r"\rtraining: .*3/10", after)  # the bar again, below the block
    for line in SAMPLES_BLOCK:
        assert line in text.replace("\r", "\n").splitlines()


class _Records:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def all_records(self, job_id: str, which: str) -> list[dict[str, Any]]:
        assert which == "events"
        return [dict(r, cursor="x") for r in self.records]

    def close(self) -> None:
        pass


def test_childtune_events_prints_data_and_samples_readably(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    phase = {"type": "phase", "phase": "training", "time": 1700000005.0, "seq": 3}
    records = [DATA, phase, SAMPLES]
    monkeypatch.setattr(commands.Client, "from_env", classmethod(lambda cls, *a: _Records(records)))
    assert commands.events_main(["job-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[8:] for line in lines] == [
        "  data       " + DATA_LINE.removeprefix("data: "),
        '  phase      {"phase": "training", "seq": 3}',
        "  samples    at step 3:",
        *(" " * 13 + line for line in SAMPLES_BLOCK[1:]),
    ]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", line[:8]) for line in lines if line[:1] != " ")

    # --json stays one JSON record per line, unchanged.
    assert commands.events_main(["job-1", "--json"]) == 0
    assert capsys.readouterr().out.count("\n") == 3
