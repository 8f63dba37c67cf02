"""Live progress of a job from its records, for ``childtune train`` and ``childtune watch``.

:class:`ProgressView` takes the records of ``metrics.jsonl`` and ``events.jsonl`` (formats in
``docs/job-directory.md``), wherever they come from (the job directory or the REST API), and
draws bars on a terminal: the Fisher pass, then training (step/total, loss, the latest eval
metric, ETA). Where the output is not a terminal (CI, a log file) it prints a line per
phase change, per evaluation and every ``log_every`` seconds instead. A causal-lm job's
``data`` event (rows kept, truncated, dropped) prints as one line and its ``samples`` events
(the model's greedy answers at each evaluation) as a short block, above the bars. Their numbers
and the text of those events are :mod:`service.cli.format`'s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm

from service.cli.format import data_text, fmt_number, samples_lines


class ProgressView:
    def __init__(
        self, file: TextIO | None = None, *, interactive: bool | None = None, log_every: float = 10.0
    ):
        self.file = file if file is not None else sys.stderr
        self.interactive = self.file.isatty() if interactive is None else interactive
        self.log_every = log_every
        self.total_steps: int | None = None
        self.step = 0
        self.phase: str | None = None
        self.loss: float | None = None
        self.eval_text: str | None = None
        self.bar: tqdm | None = None
        self.bar_kind: str | None = None
        self._logged_at = 0.0
        self.finished: Mapping[str, Any] | None = None
        self.last_eval: Mapping[str, Any] | None = None
        self.best: Mapping[str, Any] | None = None

    # -- output -------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def _open_bar(self, kind: str, total: int | None, initial: int = 0) -> None:
        if not self.interactive or self.finished is not None:
            self.bar_kind = kind
            return
        if self.bar is not None and self.bar_kind == kind and self.bar.total == total:
            return
        self._close_bar()
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=kind,
            file=self.file,
            unit="step" if kind == "training" else "batch",
            dynamic_ncols=True,
            leave=True,
        )
        self.bar_kind = kind

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None
        self.bar_kind = None

    def _postfix(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.loss is not None:
            out["loss"] = fmt_number(self.loss)
        if self.eval_text:
            out["eval"] = self.eval_text
        return out

    # -- records ------------------------------------------------------------------------------
    def metric(self, record: Mapping[str, Any]) -> None:
        kind = record.get("kind")
        step = int(record.get("step") or 0)
        if record.get("total_steps"):
            self.total_steps = int(record["total_steps"])
        if kind == "train":
            self.loss = record.get("loss")
            if self.interactive:
                self._open_bar("training", self.total_steps, initial=max(0, step - 1))
                if self.bar is not None:
                    self.bar.update(max(0, step - self.bar.n))
                    self.bar.set_postfix(self._postfix(), refresh=False)
            elif time.monotonic() - self._logged_at >= self.log_every or step == self.total_steps:
                self._logged_at = time.monotonic()
                loss = fmt_number(self.loss if isinstance(self.loss, float) else None)
                self._print(f"step {step}/{self.total_steps or '?'}  loss {loss}")
            self.step = step
        elif kind == "eval":
            key = record.get("main_metric")
            value = record.get("main_value")
            if key:
                shown = fmt_number(value, significant=True, none="None")
                self.eval_text = f"{str(key).removeprefix('eval_')}={shown}"
            self.last_eval = record
            if record.get("is_best"):
                self.best = record
            parts = [
                f"{k.removeprefix('eval_')} {fmt_number(v, significant=True)}"
                for k, v in record.items()
                if k.startswith("eval_") and isinstance(v, int | float)
            ]
            best = "  (best)" if record.get("is_best") else ""
            when = "before training (step 0)" if record.get("at_start") else f"at step {step}"
            self._print(f"eval {when}: " + ", ".join(parts) + best)

    def event(self, record: Mapping[str, Any]) -> None:
        kind = record.get("type")
        if kind == "gang":  # a job across machines: its gang formed, or it waits again
            self._print(f"nodes: {record.get('message')}")
        elif kind == "started":
            self.total_steps = record.get("total_steps") or self.total_steps
            where = (
                f"{record.get('world_size')} rank(s), ZeRO-{record.get('zero_stage')}, {record.get('device')}"
            )
            resumed = record.get("resumed_from")
            extra = f", resuming from step {resumed}" if resumed else ""
            self._print(
                f"started: {where}, {record.get('num_train_examples')} training examples, "
                f"{self.total_steps} steps{extra}"
            )
        elif kind == "phase":
            phase = record.get("phase")
            if phase != self.phase and not self.interactive and phase in ("fisher", "saving"):
                self._print(f"phase: {phase}")
            self.phase = phase
            if self.bar is not None and self.bar_kind == "training":
                self.bar.set_description(str(phase))
        elif kind == "progress":
            done, total = int(record.get("done") or 0), record.get("total")
            if self.interactive:
                self._open_bar(str(record.get("phase")), total)
                if self.bar is not None:
                    self.bar.update(max(0, done - self.bar.n))
            elif time.monotonic() - self._logged_at >= self.log_every or done == total:
                self._logged_at = time.monotonic()
                self._print(f"{record.get('phase')}: {done}/{total} batches")
        elif kind == "fisher":
            self._close_bar()
            kept = fmt_number(record.get("kept_fraction"), significant=True, none="None")
            threshold = fmt_number(record.get("threshold"), significant=True, none="None")
            self._print(
                f"Fisher mask: kept {kept} of {record.get('num_elements')} elements (threshold {threshold})"
            )
        elif kind == "data":
            self._print(f"data: {data_text(record)}")
        elif kind == "samples":
            self._print("\n".join(samples_lines(record)))
        elif kind == "resumed":
            self._print(f"resumed from {record.get('checkpoint')} (step {record.get('from_step')})")
        elif kind == "error":
            self._print(f"error: {record.get('message')}")
        elif kind == "finished":
            self.finished = record
            self._close_bar()

    def close(self) -> None:
        self._close_bar()
