"""Exact top-k over scores spread across ranks, exchanging only small histograms.

For non-negative IEEE float32 the int32 bit pattern orders exactly like the value, so the
k-th largest score is found digit by digit: one pass histograms the high 16 bits of every
local score, an all-reduce sums the 65536 counts across ranks, and the bin holding the k-th
largest fixes the high half; a second pass over the scores inside that bin fixes the low
half. No rank ever holds more than its own scores plus one chunk of temporaries and one
histogram.

Ties at the threshold are broken by global position (parameter order, then element index),
which is the same whatever the topology: the lowest positions among tied elements are kept,
found with the same histogram rounds over 48-bit positions, so exactly k elements are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

_BINS = 1 << 16
_INF_BITS = 0x7F800000
_POSITION_BITS = 48


@dataclass(frozen=True, slots=True)
class Selection:
    threshold: float  # the k-th largest score over all ranks (+inf when k == 0)
    k: int
    num_elements: int
    num_greater: int  # scores strictly above the threshold
    num_tied: int  # scores equal to the threshold
    num_tied_kept: int  # k - num_greater, kept by lowest global position


def _all_reduce(t: torch.Tensor, group: Any) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def _chunks(scores: torch.Tensor, chunk_numel: int) -> Iterator[tuple[int, torch.Tensor]]:
    for start in range(0, scores.numel(), chunk_numel):
        yield start, scores[start : start + chunk_numel].view(torch.int32)


def _check(fragments: Sequence[torch.Tensor], chunk_numel: int) -> int:
    n = 0
    for s in fragments:
        if not isinstance(s, torch.Tensor) or s.dtype != torch.float32 or s.dim() != 1:
            raise ValueError("scores: each fragment must be a 1-D float32 tensor")
        for _, bits in _chunks(s, chunk_numel):
            if bits.numel() and (int(bits.min()) < 0 or int(bits.max()) > _INF_BITS):
                raise ValueError("scores: must be non-negative and not NaN (Fisher scores are squares)")
        n += s.numel()
    return n


def _pick_from_top(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest (1-based) and the count in bins above it."""
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # above[b] = count in bins >= b
    b = int(torch.nonzero(above >= k).max())
    greater = int(above[b + 1]) if b + 1 < hist.numel() else 0
    return b, greater


def _pick_from_bottom(hist: torch.Tensor, need: int) -> tuple[int, int]:
    """The bin holding the need-th smallest (1-based) and the count in bins below it."""
    below = torch.cumsum(hist, 0)
    b = int(torch.nonzero(below >= need).min())
    return b, int(below[b - 1]) if b > 0 else 0


def kth_largest(
    fragments: Sequence[torch.Tensor], k: int, group: Any = None, chunk_numel: int = 1 << 22
) -> tuple[float, int, int]:
    """(threshold, num_greater, num_tied) of the k-th largest score over all ranks."""
    n_local = _check(fragments, chunk_numel)
    n = int(_all_reduce(torch.tensor([n_local], dtype=torch.int64), group)[0])
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"k: must be an integer in [0, {n}] (got {k!r})")
    if k == 0:
        return float("inf"), 0, 0
    hist = torch.zeros(_BINS, dtype=torch.int64)
    for s in fragments:
        for _, bits in _chunks(s, chunk_numel):
            hist += torch.bincount((bits >> 16).long(), minlength=_BINS)
    high, greater = _pick_from_top(_all_reduce(hist, group), k)
    hist = torch.zeros(_BINS, dtype=torch.int64)
    for s in fragments:
        for _, bits in _chunks(s, chunk_numel):
            inside = bits[(bits >> 16) == high]
            hist += torch.bincount((inside & 0xFFFF).long(), minlength=_BINS)
    low, greater_low = _pick_from_top(_all_reduce(hist, group), k - greater)
    tbits = (high << 16) | low
    threshold = float(torch.tensor([tbits], dtype=torch.int32).view(torch.float32)[0])
    return threshold, greater + greater_low, int(hist[low])


def _threshold_bits(threshold: float) -> int:
    return int(torch.tensor([threshold], dtype=torch.float32).view(torch.int32)[0])


def _tied_positions(
    fragments: Sequence[tuple[torch.Tensor, int]], tbits: int, chunk_numel: int
) -> Iterator[torch.Tensor]:
    for scores, global_start in fragments:
        for start, bits in _chunks(scores, chunk_numel):
            idx = torch.nonzero(bits == tbits).view(-1)
            if idx.numel():
                yield idx + (global_start + start)


def _position_cut(
    fragments: Sequence[tuple[torch.Tensor, int]], tbits: int, need: int, group: Any, chunk_numel: int
) -> int:
    """The need-th smallest global position among tied elements (radix over 48 bits)."""
    prefix = 0
    for shift in range(_POSITION_BITS - 16, -1, -16):
        hist = torch.zeros(_BINS, dtype=torch.int64)
        for pos in _tied_positions(fragments, tbits, chunk_numel):
            if shift + 16 < _POSITION_BITS:
                pos = pos[(pos >> (shift + 16)) == prefix]
            hist += torch.bincount(((pos >> shift) & 0xFFFF), minlength=_BINS)
        b, below = _pick_from_bottom(_all_reduce(hist, group), need)
        need -= below
        prefix = (prefix << 16) | b
    return prefix


def select_top_k(
    fragments: Sequence[tuple[torch.Tensor, int]], k: int, group: Any = None, chunk_numel: int = 1 << 22
) -> tuple[list[torch.Tensor], Selection]:
    """Masks with exactly k True over all ranks: scores above the k-th largest, and tied ones
    with the lowest global positions. ``fragments`` holds (scores, global_start) pairs."""
    scores = [s for s, _ in fragments]
    for _, start in fragments:
        if start < 0 or start >= 1 << _POSITION_BITS:
            raise ValueError(f"fragments: global_start must be in [0, 2**{_POSITION_BITS}) (got {start})")
    threshold, greater, tied = kth_largest(scores, k, group, chunk_numel)
    n = int(_all_reduce(torch.tensor([sum(s.numel() for s in scores)], dtype=torch.int64), group)[0])
    if k == 0:
        return [torch.zeros(s.numel(), dtype=torch.bool) for s in scores], Selection(threshold, 0, n, 0, 0, 0)
    tbits = _threshold_bits(threshold)
    need = k - greater
    cut = _position_cut(fragments, tbits, need, group, chunk_numel) if need < tied else None
    masks = []
    for s, global_start in fragments:
        m = torch.empty(s.numel(), dtype=torch.bool)
        for start, bits in _chunks(s, chunk_numel):
            keep = bits >= tbits if cut is None else bits > tbits
            if cut is not None:
                pos = torch.arange(global_start + start, global_start + start + bits.numel(), dtype=torch.int64)
                keep |= (bits == tbits) & (pos <= cut)
            m[start : start + bits.numel()] = keep
        masks.append(m)
    return masks, Selection(threshold, k, n, greater, tied, need)
