"""What a job directory holds for the API: its checkpoints, their tar streams, the mask summary.

Checkpoints (``docs/job-directory.md``): ``model/`` and ``best/`` are plain Hugging Face folders
(listed once they hold ``config.json``); ``checkpoints/step-NNNNNNNN/`` are DeepSpeed checkpoints
(listed once complete: they hold ``COMPLETE``). An archive is an uncompressed tar streamed file by
file, so a large model is never held in memory.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.jobdir import (
    BEST_DIR,
    CHECKPOINT_MARKER,
    CHECKPOINTS_DIR,
    DELTA_DIR,
    MASKS_DIR,
    MODEL_DIR,
    checkpoint_step,
)

# childtuning.masks_io.SUMMARY, childtuning.delta.AUDIT and DELTA_JSON (the method's own names;
# the API imports nothing of childtuning: tests/service/test_api.py checks they agree).
MASK_SUMMARY = "summary.json"
MASK_AUDIT = "audit.json"
DELTA_JSON = "delta.json"

__all__ = ["Checkpoint", "find_checkpoint", "list_checkpoints", "mask_summary", "tar_stream"]

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Checkpoint:
    name: str
    kind: str  # huggingface | deepspeed | delta
    path: Path
    step: int | None

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())

    def size(self) -> tuple[int, int]:
        files = self.files()
        return sum(p.stat().st_size for p in files), len(files)


def list_checkpoints(job_dir: Path) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for name in (MODEL_DIR, BEST_DIR):
        folder = job_dir / name
        if (folder / "config.json").is_file():
            found.append(Checkpoint(name=name, kind="huggingface", path=folder, step=None))
    if (job_dir / DELTA_DIR / DELTA_JSON).is_file():
        found.append(Checkpoint(name=DELTA_DIR, kind="delta", path=job_dir / DELTA_DIR, step=None))
    root = job_dir / CHECKPOINTS_DIR
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            step = checkpoint_step(folder.name)
            if step is not None and folder.is_dir() and (folder / CHECKPOINT_MARKER).exists():
                found.append(Checkpoint(name=folder.name, kind="deepspeed", path=folder, step=step))
    return found


def find_checkpoint(job_dir: Path, name: str) -> Checkpoint | None:
    return next((c for c in list_checkpoints(job_dir) if c.name == name), None)


def tar_stream(checkpoint: Checkpoint) -> Iterator[bytes]:
    """The checkpoint's folder as a tar (members under ``<name>/``), in chunks of at most 1 MiB."""
    for path in checkpoint.files():
        stat = path.stat()
        info = tarfile.TarInfo(f"{checkpoint.name}/{path.relative_to(checkpoint.path).as_posix()}")
        info.size = stat.st_size
        info.mtime = int(stat.st_mtime)
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        with path.open("rb") as handle:
            while sent < info.size:
                chunk = handle.read(min(CHUNK, info.size - sent))
                if not chunk:  # the file shrank while we read: pad to the size announced
                    chunk = b"\0" * (info.size - sent)
                sent += len(chunk)
                yield chunk
        if info.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def mask_summary(job_dir: Path) -> dict[str, Any] | None:
    """``masks/summary.json`` of the job, or None when there is none (yet); with the audit of
    the finished model (``masks/audit.json``) under ``audit`` once there is one."""
    data = _read_json(job_dir / MASKS_DIR / MASK_SUMMARY)
    if data is None:
        return None
    data = data if isinstance(data, dict) else {"summary": data}
    audit = _read_json(job_dir / MASKS_DIR / MASK_AUDIT)
    if audit is not None:
        data["audit"] = audit
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
