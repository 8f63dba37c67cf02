"""Where rank 0's metric and event records go: the job directory's files, TensorBoard, and more.

A :class:`Sink` takes each record (formats in ``docs/job-directory.md``). The training loop
talks to one :class:`Recorder`, which stamps the time, drops metric records whose step was
already written (a resumed run re-does the steps after its checkpoint) and fans out to every
sink. A sink that raises is logged and dropped: a broken dashboard never fails a job.

Sinks beyond the built-in ones are named by ``$CHILDTUNE_SINKS`` (``module:factory,...``);
``factory(job_dir, spec)`` returns a sink or None. The service's Redis stream sink is one.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from service.core import env
from service.core.contract import JobSpec
from service.core.jobdir import EVENTS_FILE, METRICS_FILE, json_safe, number_events, read_jsonl

log = logging.getLogger(__name__)


class Sink(Protocol):
    def metric(self, record: Mapping[str, Any]) -> None: ...

    def event(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """``metrics.jsonl`` and ``events.jsonl``, appended and flushed record by record."""

    def __init__(self, job_dir: Path) -> None:
        self._metrics = self._open(job_dir / METRICS_FILE)
        self._events = self._open(job_dir / EVENTS_FILE)

    @staticmethod
    def _open(path: Path) -> Any:
        # A kill may have torn the last line: end the file with a newline before appending.
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                with path.open("a", encoding="utf-8") as f:
                    f.write("\n")
        return path.open("a", encoding="utf-8")

    @staticmethod
    def _write(handle: Any, record: Mapping[str, Any]) -> None:
        handle.write(json.dumps(json_safe(dict(record)), allow_nan=False) + "\n")
        handle.flush()

    def metric(self, record: Mapping[str, Any]) -> None:
        self._write(self._metrics, record)

    def event(self, record: Mapping[str, Any]) -> None:
        self._write(self._events, record)

    def close(self) -> None:
        self._metrics.close()
        self._events.close()


class TensorBoardSink:
    """Scalars of every train and eval record, under ``train/`` and ``eval/``.

    Written in the caller's thread with tensorboardX's synchronous ``EventsWriter``, flushed at
    most every FLUSH_S and on close. tensorboardX's ``SummaryWriter`` writes from a thread fed
    by a multiprocessing queue: on a full disk (ENOSPC) that thread dies, its queue's feeder
    thread then blocks on a pipe nobody reads, and the process hung at exit joining it. Here a
    failed write stops this sink (one warning; the JSONL files keep every record)."""

    SKIP = frozenset({"kind", "step", "total_steps", "time", "main_metric", "is_best", "is_final"})
    FLUSH_S = 5.0

    def __init__(self, log_dir: Path) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self._writer: Any = EventsWriter(str(log_dir / "events"))
        self._next_flush = time.monotonic() + self.FLUSH_S

    def _stop(self, exc: OSError) -> None:
        log.warning("TensorBoard: %s (a full disk?); no more TensorBoard records", exc)
        writer, self._writer = self._writer, None
        with contextlib.suppress(OSError):
            writer._py_recordio_writer._writer.close()

    def metric(self, record: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        prefix = "eval" if record.get("kind") == "eval" else "train"
        step, now = int(record["step"]), time.time()
        try:
            for key, value in record.items():
                if key in self.SKIP or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if math.isfinite(value):
                    tag = f"{prefix}/{key.removeprefix('eval_')}"
                    self._writer.write_event(Event(wall_time=now, step=step, summary=scalar(tag, value)))
            if time.monotonic() >= self._next_flush:
                self._writer.flush()
                self._next_flush = time.monotonic() + self.FLUSH_S
        except OSError as exc:
            self._stop(exc)

    def event(self, record: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
            self._writer = None
        except OSError as exc:
            self._stop(exc)


def extra_sinks(job_dir: Path, spec: JobSpec, names: str | None = None) -> list[Sink]:
    """The sinks named by ``$CHILDTUNE_SINKS`` (or ``names``); one that cannot load is logged."""
    text = os.environ.get(env.SINKS, "") if names is None else names
    out: list[Sink] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr or "factory")
            sink = factory(job_dir, spec)
        except Exception:
            log.exception("sink %s could not be created; going on without it", name)
            continue
        if sink is not None:
            out.append(sink)
    return out


class Recorder:
    """Rank 0's one door for records: stamps ``time``, writes each metric step once, fans out."""

    def __init__(
        self, sinks: Iterable[Sink], written: Mapping[str, int] | None = None, events_written: int = 0
    ) -> None:
        self.sinks = list(sinks)
        # kind -> the last step already written (from an earlier run of the same job); steps
        # start at 0 (``eval_at_start``'s evaluation), so a kind not written yet is at -1
        self.last_step: dict[str, int] = dict(written or {})
        # Events are numbered 1, 2, ... across the runs of a job (``seq``), so a sink that
        # missed some (the store was unreachable) can tell what it lacks from the file.
        self.last_event = events_written

    @classmethod
    def for_job(cls, job_dir: Path, spec: JobSpec, *, tensorboard: bool = True) -> Recorder:
        written: dict[str, int] = {}
        for record in read_jsonl(job_dir / METRICS_FILE):
            kind, step = record.get("kind"), record.get("step")
            if isinstance(kind, str) and isinstance(step, int):
                written[kind] = max(written.get(kind, -1), step)
        events = number_events(read_jsonl(job_dir / EVENTS_FILE))
        events_written = int(events[-1]["seq"]) if events else 0
        sinks: list[Sink] = [JsonlSink(job_dir)]
        if tensorboard:
            try:
                sinks.append(TensorBoardSink(job_dir / "tensorboard"))
            except Exception:
                log.exception("TensorBoard sink unavailable; going on without it")
        sinks.extend(extra_sinks(job_dir, spec))
        return cls(sinks, written, events_written)

    def metric(self, kind: str, step: int, **fields: Any) -> bool:
        """Send a metric record; False (and nothing sent) when this step of ``kind`` was written."""
        if step <= self.last_step.get(kind, -1):
            return False
        self.last_step[kind] = step
        self._send("metric", {"kind": kind, "step": step, **fields, "time": time.time()})
        return True

    def event(self, type_: str, **fields: Any) -> None:
        self.last_event += 1
        self._send("event", {"type": type_, **fields, "time": time.time(), "seq": self.last_event})

    def _send(self, what: str, record: dict[str, Any]) -> None:
        record = json_safe(record)
        for sink in list(self.sinks):
            try:
                getattr(sink, what)(record)
            except Exception:
                log.exception("sink %s failed; dropping it", type(sink).__name__)
                self.sinks.remove(sink)
                with contextlib.suppress(Exception):
                    sink.close()

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", type(sink).__name__)
        self.sinks = []
