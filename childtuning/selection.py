"""Exact top-k over non-negative float32 scores spread across ranks, exchanging only histograms.

ChildTuning-D keeps the ``k`` elements with the largest Fisher scores under ONE global
threshold. Under ZeRO every rank holds the scores of its own parameter slices ("fragments")
only, and no rank may gather all N of them. The k-th largest is found by a radix select:

* For non-negative IEEE float32 (including +inf) the int32 bit pattern orders exactly like the
  value, so the k-th largest score is the k-th largest bit pattern.
* Round 1 histograms the high 16 bits of every local score (65536 int64 bins: ``bincount``
  over the int16 high halves, read through an int16 view of each chunk) and sums the
  histograms over ranks with one ``all_reduce``. Scanning the global histogram from the top
  gives the bin holding the k-th largest and the count of scores in the bins above it.
* Round 2 histograms the low 16 bits of the scores inside that bin only; the same scan fixes
  the low half. The result is the exact threshold, the count strictly above it and the count
  equal to it.

Ties at the threshold are broken by global position (parameter order, then element index; the
same for every world size): the ``need = k - num_greater`` tied elements with the lowest
positions are kept. The cut position is found with the same histogram idea over positions: the
position range is split into at most 65536 aligned bins, the tied elements per bin are counted
(positions inside a fragment are contiguous, so a bin count is a reshaped sum of ``scores ==
threshold``, no index lists), the bins are summed over ranks, and the bin holding the
need-th tied element narrows the range by 16 bits per round (2 rounds for N < 2**32). When a
rank has few scores in the round-2 bin it keeps their positions from round 2 and counts its
tied elements from those, without another pass over its scores.

Every pass walks the fragments in chunks of ``chunk_numel`` elements through reused buffers,
so besides the returned masks (one byte per local element) a rank holds about 3 bytes per
chunk element of temporaries and a few 512 KiB histograms; the scores are never concatenated.
Every rank makes the same sequence of collectives, decided from reduced values only; argument
errors are reduced too, so every rank raises the same ``ValueError`` instead of hanging.
"""

from __future__ import annotations

import operator
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Selection", "kth_largest", "select_top_k"]

_DIGIT_BITS = 16
_BINS = 1 << _DIGIT_BITS
_INF_BITS = 0x7F800000  # bit pattern of +inf; larger patterns are NaN, negative ones have the sign set
_MAX_POSITION_END = 1 << 62  # positions must stay well inside int64
_HIGH_HALF = 1 if sys.byteorder == "little" else 0  # which int16 of a float32 holds sign, exponent


@dataclass(frozen=True, slots=True)
class Selection:
    """Summary of a global top-k selection (identical on every rank)."""

    threshold: float  # the exact k-th largest score over all ranks (+inf when k == 0: nothing kept)
    k: int  # number kept globally (exactly k)
    num_elements: int  # N, global
    num_greater: int  # global count of scores strictly greater than threshold
    num_tied: int  # global count of scores equal to threshold
    num_tied_kept: int  # k - num_greater: tied elements kept, lowest global positions first


# --------------------------------------------------------------------------------------------
# collectives


@dataclass(frozen=True, slots=True)
class _Comm:
    """How counts are combined: all-reduced over ``group``, or kept local."""

    group: dist.ProcessGroup | None
    active: bool  # False: one process, or the caller says every rank holds all the scores
    device: torch.device  # where reduced tensors live: CUDA for a pure NCCL group, else CPU

    @staticmethod
    def make(group: dist.ProcessGroup | None, distributed: bool) -> _Comm:
        active = (
            distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
        )
        nccl = active and str(dist.get_backend(group)) == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        return _Comm(group, active, device)

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=self.group)
        return t


class _Histogram:
    """Counts accumulated on each fragment's device, summed over devices and ranks on demand."""

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self._parts: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._parts:
            self._parts[device] = torch.zeros(self.bins, dtype=torch.int64, device=device)
        return self._parts[device]

    def local_count(self, device: torch.device, b: int) -> int:
        part = self._parts.get(device)
        return 0 if part is None else int(part[b])

    def reduce(self, comm: _Comm) -> torch.Tensor:
        """Global counts on the CPU; the local parts are left as they are."""
        total = torch.zeros(self.bins, dtype=torch.int64, device=comm.device)
        for part in self._parts.values():
            total += part.to(comm.device)
        return comm.all_reduce(total).cpu()


def _bin_from_top(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """(bin holding the k-th largest, count in the bins above it); 1 <= k <= hist.sum()."""
    above = hist.flip(0).cumsum(0).flip(0)  # above[b] = count in bins >= b, non-increasing
    b = int((above >= k).sum()) - 1
    return b, int(above[b]) - int(hist[b])


def _bin_from_bottom(hist: torch.Tensor, need: int) -> tuple[int, int]:
    """(bin holding the need-th smallest, count in the bins below it); 1 <= need <= hist.sum()."""
    upto = hist.cumsum(0)  # upto[b] = count in bins <= b, non-decreasing
    b = int((upto < need).sum())
    return b, int(upto[b]) - int(hist[b])


# --------------------------------------------------------------------------------------------
# local passes


def _chunks(
    scores: torch.Tensor, chunk_numel: int, lo: int = 0, hi: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(offset, contiguous float32 chunk) over scores[lo:hi]; a strided fragment is copied chunkwise."""
    hi = scores.numel() if hi is None else hi
    for a in range(lo, hi, chunk_numel):
        c = scores[a : min(a + chunk_numel, hi)]
        yield a, c if c.is_contiguous() else c.contiguous()


class _Workspace:
    """Chunk-sized buffers reused by every chunk of a pass, one per (device, dtype): the passes
    then allocate no chunk-sized temporaries (the allocator would keep, and fragment, them)."""

    def __init__(self, scores: Sequence[torch.Tensor], chunk_numel: int) -> None:
        self.size = min(chunk_numel, max((s.numel() for s in scores), default=0))
        self._bufs: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def get(self, device: torch.device, dtype: torch.dtype, n: int) -> torch.Tensor:
        buf = self._bufs.get((device, dtype))
        if buf is None or buf.numel() < n:
            buf = self._bufs[(device, dtype)] = torch.empty(max(n, self.size), dtype=dtype, device=device)
        return buf[:n]


def _high_halves(chunk: torch.Tensor) -> torch.Tensor:
    """The high 16 bits (sign, exponent, 7 mantissa bits) of each float32 as an int16 view."""
    return chunk.view(torch.int16)[_HIGH_HALF::2]


def _bits_to_float(bits: int) -> float:
    return float(struct.unpack("=f", struct.pack("=i", bits))[0])


def _high_histogram(
    scores: Sequence[torch.Tensor], comm: _Comm, chunk_numel: int, ws: _Workspace | None = None
) -> tuple[torch.Tensor, _Histogram]:
    """Round 1: global histogram of the high halves, and the local one (validated scores have
    high halves in [0, 0x7F80], so ``bincount`` on the int16 view is safe)."""
    ws = ws or _Workspace(scores, chunk_numel)
    local = _Histogram(_BINS)
    for s in scores:
        for _, c in _chunks(s, chunk_numel):
            high = ws.get(c.device, torch.int16, c.numel())
            high.copy_(_high_halves(c))  # contiguous: bincount would copy a strided view itself
            local.on(c.device).add_(torch.bincount(high, minlength=_BINS))
    return local.reduce(comm), local


def _cache_limit(chunk_numel: int) -> int:
    """Most local round-2 elements whose (position, bits) select_top_k keeps for the tie-break
    (12 bytes each: chunk_numel // 8 keeps this under 1.5 bytes per chunk element)."""
    return chunk_numel // 8


_Cache = list[tuple[torch.Tensor, torch.Tensor]]  # (global positions, int32 bits) of the round-2 elements


def _kth_largest_bits(
    scores: Sequence[torch.Tensor],
    k: int,
    comm: _Comm,
    chunk_numel: int,
    starts: Sequence[int] | None = None,
) -> tuple[int, int, int, _Cache | None]:
    """Radix select on validated scores, 1 <= k <= N: (threshold bits, num_greater, num_tied, cache).

    With ``starts`` and few local scores in the round-2 bin, ``cache`` holds their positions and
    bits: the tied elements are among them, so the tie-break needs no further pass over the scores."""
    ws = _Workspace(scores, chunk_numel)
    hist, local = _high_histogram(scores, comm, chunk_numel, ws)
    high, greater = _bin_from_top(hist, k)
    # Round 2: low halves of the scores whose high half is `high` (skipped where none are local).
    h2 = _Histogram(_BINS)
    base = high << _DIGIT_BITS
    in_bin = {d: local.local_count(d, high) for d in {s.device for s in scores}}  # local, per device
    cache: _Cache | None = None
    if starts is not None and sum(in_bin.values()) <= _cache_limit(chunk_numel):
        cache = []
    for i, s in enumerate(scores):
        if s.numel() == 0 or in_bin[s.device] == 0:
            continue
        for a, c in _chunks(s, chunk_numel):
            inside_bin = torch.eq(_high_halves(c), high, out=ws.get(c.device, torch.bool, c.numel()))
            idx = torch.nonzero(inside_bin).view(-1)  # nonzero + index_select: faster than a bool index
            if idx.numel():
                inside = c.view(torch.int32).index_select(0, idx)
                h2.on(c.device).add_(torch.bincount(inside - base, minlength=_BINS))
                if cache is not None and starts is not None:
                    cache.append((idx + (starts[i] + a), inside))
    hist = h2.reduce(comm)
    low, greater_low = _bin_from_top(hist, k - greater)
    return base | low, greater + greater_low, int(hist[low]), cache


def _num_inf(scores: Sequence[torch.Tensor], comm: _Comm, chunk_numel: int) -> int:
    """Global count of +inf scores (the k == 0 convention's num_tied): the top bin of round 1."""
    return int(_high_histogram(scores, comm, chunk_numel)[0][_INF_BITS >> _DIGIT_BITS])


def _count_tied(
    fragments: Sequence[tuple[torch.Tensor, int]],
    tbits: int,
    lo: int,
    width_bits: int,
    shift: int,
    chunk_numel: int,
) -> _Histogram:
    """Tied elements (bits == tbits) with position in [lo, lo + 2**width_bits), counted per
    aligned bin of 2**shift positions. Positions in a fragment are contiguous, so a chunk splits
    into a partial head bin, whole bins (a reshaped sum) and a partial tail bin."""
    hist = _Histogram(1 << (width_bits - shift))
    ws = _Workspace([s for s, _ in fragments], chunk_numel)
    hi = lo + (1 << width_bits)
    w = 1 << shift
    row_dtype = torch.int32 if shift < 31 else torch.int64  # a row sums at most w ones
    for scores, start in fragments:
        a, b = max(lo, start) - start, min(hi, start + scores.numel()) - start
        if a >= b:
            continue
        for off, c in _chunks(scores, chunk_numel, a, b):
            h = hist.on(c.device)
            eq = torch.eq(c.view(torch.int32), tbits, out=ws.get(c.device, torch.bool, c.numel()))
            rel = start + off - lo  # position of eq[0] relative to lo
            f, i, n = rel >> shift, 0, eq.numel()
            head = (w - (rel & (w - 1))) & (w - 1)
            if head:
                i = min(head, n)
                h[f] += eq[:i].sum()
                f += 1
            m = (n - i) >> shift
            if m:
                h[f : f + m] += eq[i : i + m * w].view(torch.uint8).view(m, w).sum(1, dtype=row_dtype)
                i, f = i + m * w, f + m
            if i < n:
                h[f] += eq[i:].sum()
    return hist


def _count_tied_cached(tied: Sequence[torch.Tensor], lo: int, width_bits: int, shift: int) -> _Histogram:
    """As :func:`_count_tied`, from the positions of the local tied elements (a short list)."""
    hist = _Histogram(1 << (width_bits - shift))
    for p in tied:
        p = p[(p >= lo) & (p < lo + (1 << width_bits))]
        if p.numel():
            hist.on(p.device).add_(torch.bincount((p - lo) >> shift, minlength=hist.bins))
    return hist


def _position_cut(
    fragments: Sequence[tuple[torch.Tensor, int]],
    tbits: int,
    need: int,
    max_end: int,
    comm: _Comm,
    chunk_numel: int,
    cache: _Cache | None,
) -> int:
    """Global position of the need-th tied element in position order: a radix select over
    positions in [0, 2**ceil(log2(max_end))), at most 16 bits a round (2 rounds for N < 2**32).
    Each rank counts its tied elements from the round-2 cache when it has one, else by a scan."""
    tied = None if cache is None else [p[b == tbits] for p, b in cache]
    lo, width_bits = 0, max(1, (max_end - 1).bit_length())
    while True:
        shift = max(0, width_bits - _DIGIT_BITS)
        if tied is None:
            local = _count_tied(fragments, tbits, lo, width_bits, shift, chunk_numel)
        else:
            local = _count_tied_cached(tied, lo, width_bits, shift)
        b, below = _bin_from_bottom(local.reduce(comm), need)
        need -= below
        lo += b << shift
        width_bits = shift
        if shift == 0:
            return lo


# --------------------------------------------------------------------------------------------
# validation (collective: every rank raises the same error)


@dataclass(frozen=True, slots=True)
class _Global:
    num_elements: int
    max_end: int  # 1 + the largest global position on any rank (0 when there is none)


def _validate(
    scores: Sequence[object],
    starts: Sequence[object] | None,
    k: object,
    comm: _Comm,
    chunk_numel: object,
) -> _Global:
    problems: dict[str, str] = {}
    chunk_ok = isinstance(chunk_numel, int) and not isinstance(chunk_numel, bool) and chunk_numel >= 1
    if not chunk_ok:
        problems["chunk_numel"] = f"chunk_numel: must be an integer >= 1 (got {chunk_numel!r})"
    n_local, max_end = 0, 0
    for i, s in enumerate(scores):
        if not isinstance(s, torch.Tensor) or s.dtype != torch.float32 or s.dim() != 1:
            what = f"{s.dtype} tensor of shape {tuple(s.shape)}" if isinstance(s, torch.Tensor) else type(s)
            problems.setdefault(
                "type", f"fragments: scores must be 1-D float32 tensors (fragment {i} is a {what})"
            )
            continue
        n_local += s.numel()
        if chunk_ok and "value" not in problems:
            assert isinstance(chunk_numel, int)
            for _, c in _chunks(s, chunk_numel):
                if c.numel() == 0:
                    continue
                mn, mx = torch.aminmax(c.view(torch.int32))
                if int(mn) < 0 or int(mx) > _INF_BITS:
                    problems["value"] = (
                        f"fragments: scores must be non-negative and not NaN (fragment {i} holds a "
                        "negative value, -0.0 or NaN)"
                    )
                    break
        if starts is not None:
            st = _as_int(starts[i])
            if st is None or st < 0 or st + s.numel() > _MAX_POSITION_END:
                problems.setdefault(
                    "start",
                    f"fragments: global_start must be an integer >= 0 with global_start + numel <= 2**62 "
                    f"(fragment {i} has {starts[i]!r})",
                )
            else:
                max_end = max(max_end, st + s.numel())
    k_int = _as_int(k)
    if k_int is None:
        problems["k_type"] = f"k: must be an integer (got {k!r})"
        k_int = 0
    order = ["chunk_numel", "type", "value", "start", "k_type"]
    flags = [1 if name in problems else 0 for name in order]
    k_t = max(-_MAX_POSITION_END, min(k_int, _MAX_POSITION_END))  # out-of-range k fails below anyway
    mx_t = comm.all_reduce(
        torch.tensor([*flags, k_t, -k_t, max_end], dtype=torch.int64, device=comm.device), "max"
    )
    n = int(comm.all_reduce(torch.tensor([n_local], dtype=torch.int64, device=comm.device))[0])
    reduced = mx_t.tolist()
    for name, flag in zip(order, reduced[: len(order)], strict=True):
        if flag:
            raise ValueError(problems.get(name, f"{_FIELD[name]}: invalid on another rank ({name})"))
    if reduced[len(order)] != -reduced[len(order) + 1]:
        raise ValueError(f"k: must be the same on every rank (got {k_int} here)")
    if not 0 <= k_int <= n:
        raise ValueError(f"k: must be in [0, N] with N = {n} scores over all ranks (got {k_int})")
    return _Global(num_elements=n, max_end=int(reduced[len(order) + 2]))


def _as_int(x: object) -> int | None:
    """An integer (Python, NumPy or 0-d integer tensor), but not a bool; None otherwise."""
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        return None


def _split_pairs(fragments: Sequence[tuple[torch.Tensor, int]]) -> tuple[list[object], list[object]]:
    """(scores, global starts); a malformed entry yields values that fail validation."""
    scores: list[object] = []
    starts: list[object] = []
    for f in fragments:
        pair = f if isinstance(f, tuple | list) and len(f) == 2 else (f, None)
        scores.append(pair[0])
        starts.append(pair[1])
    return scores, starts


_FIELD = {
    "chunk_numel": "chunk_numel",
    "type": "fragments",
    "value": "fragments",
    "start": "fragments",
    "k_type": "k",
}


# --------------------------------------------------------------------------------------------
# public API


def kth_largest(
    fragments: Sequence[torch.Tensor],
    k: int,
    group: dist.ProcessGroup | None = None,
    chunk_numel: int = 1 << 22,
    *,
    distributed: bool = True,
) -> tuple[float, int, int]:
    """The exact k-th largest score over all ranks: ``(threshold, num_greater, num_tied)``.

    ``fragments`` are this rank's 1-D float32 score tensors (non-negative, no NaN; +inf is
    allowed). Two radix rounds of 16-bit histograms, each summed with one ``all_reduce``.
    For k == 0 the threshold is +inf by convention (num_greater = 0, num_tied = count of +inf).
    Collective over ``group`` (the default group when None) when torch.distributed is
    initialised, the group has more than one rank and ``distributed`` is True; pass
    ``distributed=False`` when every rank holds all the scores (nothing is reduced then).
    """
    comm = _Comm.make(group, distributed)
    _validate(fragments, None, k, comm, chunk_numel)
    k = operator.index(k)
    if k == 0:
        return float("inf"), 0, _num_inf(fragments, comm, chunk_numel)
    tbits, greater, tied, _ = _kth_largest_bits(fragments, k, comm, chunk_numel)
    return _bits_to_float(tbits), greater, tied


def select_top_k(
    fragments: Sequence[tuple[torch.Tensor, int]],
    k: int,
    group: dist.ProcessGroup | None = None,
    chunk_numel: int = 1 << 22,
    *,
    distributed: bool = True,
) -> tuple[list[torch.Tensor], Selection]:
    """Masks keeping exactly k elements over all ranks, with one global threshold.

    ``fragments`` holds this rank's ``(scores, global_start)`` pairs: ``scores`` is a 1-D
    float32 tensor (non-negative, no NaN, +inf allowed) and element i has global position
    ``global_start + i``; positions are unique across ranks and order elements by (parameter
    order, element index), independent of the world size. Returns one bool mask per fragment
    (same length and device) holding every element with score > threshold plus the tied
    elements (score == threshold) with the lowest global positions, exactly k in all, and the
    global :class:`Selection` (identical on every rank). Collective like :func:`kth_largest`
    (``distributed=False``: every rank holds all the scores, nothing is reduced).
    """
    comm = _Comm.make(group, distributed)
    g = _validate(*_split_pairs(fragments), k, comm, chunk_numel)
    k = operator.index(k)
    fragments = [(s, operator.index(start)) for s, start in fragments]
    scores = [s for s, _ in fragments]
    n = g.num_elements
    if k == 0:
        masks = [torch.zeros(s.numel(), dtype=torch.bool, device=s.device) for s in scores]
        return masks, Selection(float("inf"), 0, n, 0, _num_inf(scores, comm, chunk_numel), 0)
    tbits, greater, tied, cache = _kth_largest_bits(scores, k, comm, chunk_numel, [a for _, a in fragments])
    need = k - greater
    cut = None
    if need < tied:
        cut = _position_cut(fragments, tbits, need, g.max_end, comm, chunk_numel, cache)
    del cache
    masks = []
    for s, start in fragments:
        m = torch.empty(s.numel(), dtype=torch.bool, device=s.device)
        # Indices below `split` have position <= cut: ties kept there (>=), dropped after (>).
        split = s.numel() if cut is None else min(max(cut - start + 1, 0), s.numel())
        for a, c in _chunks(s, chunk_numel):
            bits, b = c.view(torch.int32), a + c.numel()
            j = min(max(split - a, 0), c.numel())
            if j:
                torch.ge(bits[:j], tbits, out=m[a : a + j])
            if j < c.numel():
                torch.gt(bits[j:], tbits, out=m[a + j : b])
        masks.append(m)
    return masks, Selection(_bits_to_float(tbits), k, n, greater, tied, need)
