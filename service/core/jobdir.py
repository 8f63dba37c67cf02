"""A job's directory, defined once: the names of its files and folders, the exit codes, and the
reads and writes that every process around a job shares (the API, the worker's task and reaper,
the launcher, the training program, the CLI); and the artifacts folder that holds the jobs'
directories (:class:`ArtifactsLayout`).

``docs/job-directory.md`` documents the layout and the records; this module is their one
definition in code. Standard library only: the API stands on it without torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ARTIFACTS_EXPERIMENTS_DIR",
    "ARTIFACTS_FILES_DIR",
    "ARTIFACTS_JOBS_DIR",
    "BEST_DIR",
    "CHECKPOINTS_DIR",
    "CHECKPOINT_MARKER",
    "DELTA_DIR",
    "EVENTS_FILE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "JOB_FILE",
    "LAUNCHER_LOG",
    "LOCK_FILE",
    "MASKS_DIR",
    "METRICS_FILE",
    "MODEL_DIR",
    "NODE_MARKER",
    "PREDICTIONS_FILE",
    "STATUS_FILE",
    "ArtifactsLayout",
    "JsonlTail",
    "atomic_write_text",
    "checkpoint_step",
    "checkpoint_tag",
    "json_safe",
    "node_launcher_log",
    "number_events",
    "read_jsonl",
    "read_status",
    "write_status",
]

JOB_FILE = "job.json"  # the job spec (service.core.contract.JobSpec as JSON)
STATUS_FILE = "status.json"  # rank 0's last word: status, phase, step, total_steps, best, error
METRICS_FILE = "metrics.jsonl"  # train and eval records
EVENTS_FILE = "events.jsonl"  # phase changes, checkpoints, resume, errors, finish
LAUNCHER_LOG = "launcher.log"  # the launcher's and the ranks' output


def node_launcher_log(node: int) -> str:
    """The launcher log of node ``node`` > 0 of a multi-node job (node 0's is LAUNCHER_LOG)."""
    return f"launcher.node{node}.log"


# A multi-node job: node 0 writes this marker, every other node must read the same (the folder
# is shared); each node i > 0 logs its launcher to node_launcher_log(i).
NODE_MARKER = ".nodes-marker"
LOCK_FILE = "run.lock"  # held by a run's launcher and ranks: one run of a job at a time
PREDICTIONS_FILE = "predictions.json"  # the final model's dev-set outputs
MODEL_DIR = "model"  # the final model, a Hugging Face folder
BEST_DIR = "best"  # the best model by the main metric, same format
DELTA_DIR = "delta"  # a strict ChildTuning-D child as a sparse change of the base (childtuning.delta)
MASKS_DIR = "masks"  # ChildTuning masks (childtuning.masks_io writes inside it)
CHECKPOINTS_DIR = "checkpoints"  # DeepSpeed checkpoints, one folder per save
CHECKPOINT_MARKER = "COMPLETE"  # written last in a checkpoint folder: only then does it count
_CHECKPOINT_TAG = re.compile(r"^step-(\d{8})$")

# The artifacts folder (``Settings.artifacts``, ``$CHILDTUNE_ARTIFACTS``) holds these folders; a
# job's directory is ``<artifacts>/jobs/<job id>``.
ARTIFACTS_JOBS_DIR = "jobs"  # one directory per job (the layout above)
ARTIFACTS_FILES_DIR = "files"  # uploaded dataset files, by file id
ARTIFACTS_EXPERIMENTS_DIR = "experiments"  # one folder per experiment (its plots)


@dataclass(frozen=True, slots=True)
class ArtifactsLayout:
    """The folders under an artifacts root, derived from the root or from a job's directory."""

    root: Path

    @classmethod
    def of_job(cls, job_dir: Path) -> ArtifactsLayout:
        """The artifacts folder that holds ``job_dir`` (``<artifacts>/jobs/<job id>``)."""
        return cls(job_dir.parent.parent)

    @property
    def jobs(self) -> Path:
        return self.root / ARTIFACTS_JOBS_DIR

    @property
    def files(self) -> Path:
        return self.root / ARTIFACTS_FILES_DIR

    @property
    def experiments(self) -> Path:
        return self.root / ARTIFACTS_EXPERIMENTS_DIR


# The training program's exit codes (and so the launcher's, and `childtune train`'s).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 75


def checkpoint_tag(step: int) -> str:
    """The folder name of the checkpoint at ``step``: ``step-00000012``."""
    return f"step-{step:08d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder name, or None when ``name`` is not one."""
    match = _CHECKPOINT_TAG.match(name)
    return int(match.group(1)) if match else None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` so that a reader (or a kill) sees the old content or the new, never half:
    a temporary file in the same folder, then a rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None, so it stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_status(job_dir: Path, **fields: Any) -> None:
    """Rewrite ``status.json`` atomically, stamped with ``updated`` (Unix seconds)."""
    atomic_write_text(
        job_dir / STATUS_FILE, json.dumps({**fields, "updated": time.time()}, default=str) + "\n"
    )


def read_status(job_dir: Path) -> dict[str, Any]:
    """``status.json`` as a dict; ``{}`` when missing or unreadable."""
    try:
        data = json.loads((job_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete records of a JSONL file; a torn last line (a kill mid-write) is ignored."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def number_events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with their ``seq``: the stored one, else their position (files from before ``seq``)."""
    out: list[dict[str, Any]] = []
    for index, record in enumerate(records, start=1):
        seq = record.get("seq")
        out.append(record if isinstance(seq, int) and not isinstance(seq, bool) else {**record, "seq": index})
    return out


class JsonlTail:
    """Follows a job's ``metrics.jsonl`` and ``events.jsonl``: each :meth:`poll` returns the
    records of the complete lines written since the last one, as ``("metric" | "event", record)``
    in time order. A line still being written waits for the next poll; a line that is not a JSON
    object is skipped."""

    def __init__(self, job_dir: Path) -> None:
        self.paths = {"metric": job_dir / METRICS_FILE, "event": job_dir / EVENTS_FILE}
        self.offsets = dict.fromkeys(self.paths, 0)

    def skip_existing(self) -> None:
        """Start after what the files hold now (a resumed job's earlier records)."""
        for kind, path in self.paths.items():
            self.offsets[kind] = path.stat().st_size if path.is_file() else 0

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[float, str, dict[str, Any]]] = []
        for kind, path in self.paths.items():
            if not path.is_file():
                continue
            with path.open("rb") as f:
                f.seek(self.offsets[kind])
                data = f.read()
            end = data.rfind(b"\n")
            if end < 0:
                continue
            self.offsets[kind] += end + 1
            for line in data[: end + 1].decode("utf-8", "replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    out.append((float(record.get("time") or 0), kind, record))
        out.sort(key=lambda item: item[0])
        return [(kind, record) for _, kind, record in out]
