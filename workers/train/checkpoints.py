"""DeepSpeed checkpoints of a job: one tag per save (``step-00000012``), the last K kept.

A tag counts only once rank 0 has written its ``COMPLETE`` marker, after every rank finished
its part of the save; a kill during a save leaves a tag without the marker, which the next
start ignores and removes. The marker holds the loop's own state (step, best metric).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

from service.core.jobdir import CHECKPOINT_MARKER, atomic_write_text, checkpoint_step, checkpoint_tag

MARKER = CHECKPOINT_MARKER
tag_of = checkpoint_tag


def complete_tags(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    out = []
    for path in ckpt_dir.iterdir():
        step = checkpoint_step(path.name)
        if step is not None and (path / MARKER).is_file():
            out.append((step, path))
    return sorted(out)


def latest(ckpt_dir: Path) -> tuple[int, Path, dict[str, Any]] | None:
    """The newest complete checkpoint: (step, folder, loop state), or None."""
    tags = complete_tags(ckpt_dir)
    if not tags:
        return None
    step, path = tags[-1]
    return step, path, json.loads((path / MARKER).read_text())


def remove_incomplete(ckpt_dir: Path) -> list[str]:
    """Delete tags without a marker (rank 0, before any rank reads). Returns their names."""
    removed = []
    if ckpt_dir.is_dir():
        for path in ckpt_dir.iterdir():
            if path.is_dir() and not (path / MARKER).is_file():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
    return removed


def save(engine: Any, ckpt_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save a checkpoint of every rank, mark it complete, prune to the last ``keep``. Collective."""
    tag = tag_of(step)
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"loop": state}, save_latest=False)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if dist.is_initialized():
        dist.barrier()
    path = ckpt_dir / tag
    if rank == 0:
        atomic_write_text(path / MARKER, json.dumps({**state, "step": step}))
        for _, old in complete_tags(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return path


def load(engine: Any, ckpt_dir: Path, step: int) -> None:
    """Restore model, optimizer, scheduler and DeepSpeed's step counter from a complete tag."""
    load_path, _ = engine.load_checkpoint(
        str(ckpt_dir), tag=tag_of(step), load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag_of(step)}")
