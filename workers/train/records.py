"""What a run says about itself: events, metric records, its phase and ``status.json``.

Rank 0 alone writes: its :class:`Records` opens the job's sinks (:class:`workers.train.sinks.Recorder`:
``metrics.jsonl``, ``events.jsonl``, TensorBoard and ``$CHILDTUNE_SINKS``) and rewrites
``status.json`` through :func:`service.core.jobdir.write_status`; on the other ranks every call is
a no-op, so the recipe calls them everywhere alike. Formats: ``docs/job-directory.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.core.contract import JobSpec
from service.core.jobdir import write_status

if TYPE_CHECKING:
    from workers.train.sinks import Recorder

__all__ = ["Records"]

# status.json is rewritten at most this often, unless a call forces it (a phase, the end).
STATUS_EVERY_S = 1.0


class Records:
    """One rank's records of a job. ``progress`` gives what ``status.json`` says of the run beside
    its status and phase: ``step``, ``total_steps``, ``best``, ``final``."""

    def __init__(
        self,
        job_dir: Path,
        spec: JobSpec,
        *,
        is_main: bool,
        progress: Callable[[], Mapping[str, Any]],
    ) -> None:
        self.job_dir = job_dir
        self.spec = spec
        self.is_main = is_main
        self.phase = "preparing"
        self.recorder: Recorder | None = None  # rank 0, from open()
        self._progress = progress
        self._status_at = 0.0

    def open(self) -> None:
        """Rank 0: open the sinks (the job's earlier records are read back: nothing is written twice)."""
        if self.is_main:
            from workers.train.sinks import Recorder

            self.recorder = Recorder.for_job(self.job_dir, self.spec)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def event(self, type_: str, **fields: Any) -> None:
        if self.recorder is not None:
            self.recorder.event(type_, **fields)

    def metric(self, kind: str, step: int, **fields: Any) -> None:
        """A ``train`` or ``eval`` record (one whose step was already written is dropped)."""
        if self.recorder is not None:
            self.recorder.metric(kind, step, **fields)

    def set_phase(self, phase: str) -> None:
        """Enter ``phase``: a ``phase`` event and ``status.json`` (``preparing`` is always announced)."""
        if phase != self.phase or phase == "preparing":
            self.phase = phase
            self.event("phase", phase=phase)
            self.status("running", force=True)

    def status(self, status: str, *, force: bool = False, error: str | None = None) -> None:
        """Rewrite ``status.json`` (at most every :data:`STATUS_EVERY_S` unless ``force``)."""
        if not self.is_main:
            return
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_EVERY_S:
            return
        self._status_at = now
        write_status(self.job_dir, status=status, phase=self.phase, **self._progress(), error=error)
