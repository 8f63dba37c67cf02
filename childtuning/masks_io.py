"""D masks on disk: one safetensors shard of packed bits per rank, and ``summary.json``.

A shard holds, for each fragment the rank owns, its packed keep bits under the parameter's
name, with the fragment's ``start`` and ``numel`` in the file's metadata. Loading maps the
saved fragments onto whatever the loading rank owns, so a job saved at one world size or
ZeRO stage resumes at another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from childtuning.bits import pack_bits, unpack_bits, unpack_range
from childtuning.layout import Fragment

SUMMARY = "summary.json"


def _shard_name(rank: int, world: int) -> str:
    return f"mask-rank{rank:05d}-of-{world:05d}.safetensors"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_masks(
    directory: Path,
    *,
    mode: str,
    fragments: Sequence[Fragment],
    bits: Mapping[int, torch.Tensor],
    summary: Mapping[str, Any],
    sharded: bool,
) -> Path:
    """Write this rank's shard of the D mask (``bits`` by parameter index, for ``fragments``) and,
    on rank 0, ``summary.json``. ``sharded``: ranks own parts of parameters (ZeRO 1-3); else
    every rank holds the whole mask and rank 0 writes it. Collective under ZeRO."""
    distributed = dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    # Without ZeRO partitioning every rank holds the whole mask: rank 0 writes one shard.
    world = dist.get_world_size() if sharded else 1
    directory.mkdir(parents=True, exist_ok=True)
    if mode == "childtuning-d" and (sharded or rank == 0):
        tensors = {}
        meta = {}
        for frag in fragments:
            tensors[frag.name] = bits[frag.param_index].contiguous()
            meta[frag.name] = {"start": frag.start, "numel": frag.numel}
        path = directory / _shard_name(rank, world)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"fragments": json.dumps(meta), "world_size": str(world)})
        os.replace(tmp, path)
    if distributed:
        dist.barrier()
    if rank == 0:
        shards = sorted(p.name for p in directory.glob("mask-rank*.safetensors"))
        _atomic_write_text(directory / SUMMARY, json.dumps({**summary, "shards": shards}, indent=2) + "\n")
    if distributed:
        dist.barrier()
    return directory


def _read_shards(directory: Path) -> list[tuple[Path, dict[str, dict[str, int]]]]:
    summary = json.loads((directory / SUMMARY).read_text())
    out = []
    for name in summary.get("shards", []):
        path = directory / name
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["fragments"])
        out.append((path, meta))
    return out


def load_masks(
    directory: Path, *, mode: str, reserve_p: float, fragments: Sequence[Fragment]
) -> tuple[dict[int, torch.Tensor] | None, dict[str, Any]]:
    """The D mask's bits (by parameter index) for the ``fragments`` this rank owns, whatever the
    topology that saved them, and the saved summary; no bits for the other modes."""
    summary = json.loads((directory / SUMMARY).read_text())
    for key, value in (("mode", mode), ("reserve_p", reserve_p)):
        if summary[key] != value:
            raise ValueError(
                f"{key}: the saved masks were made with {summary[key]!r}, this job has {value!r}"
            )
    if mode != "childtuning-d":
        return None, summary
    mine = {f.name: f for f in fragments}
    parts: dict[str, torch.Tensor] = {n: torch.zeros(f.numel, dtype=torch.bool) for n, f in mine.items()}
    filled = dict.fromkeys(mine, 0)
    for path, meta in _read_shards(directory):
        with safe_open(str(path), framework="pt") as f:
            for name, span in meta.items():
                frag = mine.get(name)
                if frag is None:
                    continue
                lo = max(frag.start, span["start"])
                hi = min(frag.start + frag.numel, span["start"] + span["numel"])
                if lo >= hi:
                    continue
                bits = unpack_range(f.get_tensor(name), lo - span["start"], hi - lo)
                parts[name][lo - frag.start : hi - frag.start] = bits
                filled[name] += hi - lo
    missing = [n for n, f in mine.items() if filled[n] != f.numel]
    if missing:
        raise ValueError(
            f"masks: {directory} does not cover parameters {missing[:3]}; was it saved by this model?"
        )
    return {mine[n].param_index: pack_bits(m) for n, m in parts.items()}, summary


def load_full_mask(directory: str | Path) -> dict[str, torch.Tensor]:
    """The whole D mask, assembled from every rank's shard, shaped like the parameters."""
    directory = Path(directory)
    summary = json.loads((directory / SUMMARY).read_text())
    params = summary["params"]
    full = {n: torch.zeros(info["numel"], dtype=torch.bool) for n, info in params.items()}
    for path, meta in _read_shards(directory):
        with safe_open(str(path), framework="pt") as f:
            for name, span in meta.items():
                bits = unpack_bits(f.get_tensor(name), span["numel"])
                full[name][span["start"] : span["start"] + span["numel"]] = bits
    return {n: m.view(params[n]["shape"]) for n, m in full.items()}


def mask_overlap(reference: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """How much of ``reference``'s kept set ``other`` keeps too (two full masks, e.g. from
    :func:`load_full_mask`): ``kept`` and ``other_kept`` (elements), ``shared``, ``overlap``
    (shared / kept) and ``worst_tensor`` (the name and share of the tensor that keeps least)."""
    if set(reference) != set(other):
        raise ValueError(f"masks: different tensors ({sorted(set(reference) ^ set(other))[:5]})")
    kept = sum(int(m.sum()) for m in reference.values())
    shared = {n: int((reference[n] & other[n]).sum()) for n in reference}
    share, name = min(
        ((shared[n] / int(m.sum()), n) for n, m in reference.items() if int(m.sum())), default=(1.0, None)
    )
    return {
        "kept": kept,
        "other_kept": sum(int(m.sum()) for m in other.values()),
        "shared": sum(shared.values()),
        "overlap": round(sum(shared.values()) / kept, 5) if kept else 1.0,
        "worst_tensor": [name, round(share, 4)],
    }
