"""AdamW with the ChildTuning mask fused into its one pass over memory.

torch's foreach AdamW reads and writes parameters, gradients and both moments several
times per step; a separate masking pass over 110M gradients costs about as much again. Here
each kernel does draw (or bit unpack), mask, moment updates, decoupled weight decay and the
parameter update in one pass, compiled by ``torch.compile`` (inductor). The arithmetic
follows ``torch.optim.adamw`` op for op; only the rounding of fused multiply-adds differs.

Kernels take their scalars by name: an :class:`AdamScalars` for the step, and a
:class:`DrawMask` or :class:`BitsMask` for the mask. Their fields are 0-d tensors so a
changing learning rate, step or draw key does not recompile (``torch.compile`` flattens a
NamedTuple argument into its fields); the segment length is dynamic, so one compiled kernel
per variant serves every parameter.

A flat optimizer tensor that holds the fragments of many parameters (a ZeRO partition) is
stepped in one launch by the ``segments_*`` kernels: a :class:`SegmentBits` or
:class:`SegmentDraws` table says where each parameter's fragment lies, and each element finds
its segment by a binary search over the table's ends inside the kernel (inductor's
``bucketize`` has no CPU lowering: it would materialise two int64 copies of the index).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from childtuning.draws import hash_elements, param_key

log = logging.getLogger(__name__)

Kernel = Callable[..., None]


class AdamScalars(NamedTuple):
    """The scalars of one AdamW step (see :func:`scalars`), each a 0-d float32 tensor."""

    lr: torch.Tensor
    beta1: torch.Tensor
    beta2: torch.Tensor
    eps: torch.Tensor
    weight_decay: torch.Tensor
    bias_correction1: torch.Tensor  # 1 - beta1**step
    bias_correction2_sqrt: torch.Tensor  # sqrt(1 - beta2**step)


class DrawMask(NamedTuple):
    """A counter-based draw (F, update-dropout): keep element i where
    ``hash_elements(draw_key(seed, step, param_index), start + i) < threshold``; kept values are
    multiplied by ``scale``. The parameter's key is computed in the kernel from the step's key
    (one tensor for every parameter, written once a step) and the parameter's index."""

    step_key: torch.Tensor  # int64, draws.step_key(seed, step)
    param_index: torch.Tensor  # int64, the parameter's index (a constant)
    start: torch.Tensor  # int64, the segment's first element in the full parameter
    threshold: torch.Tensor  # int64, keep_threshold(reserve_p)
    scale: torch.Tensor  # float32, 1/p when rescaling, else 1


class BitsMask(NamedTuple):
    """A stored D mask: keep element i where bit ``bit_offset + i`` of ``packed`` is set."""

    packed: torch.Tensor  # uint8, bits packed little-endian within each byte
    bit_offset: torch.Tensor  # int64
    scale: torch.Tensor  # float32, 1/p when rescaling, else 1


class SegmentBits(NamedTuple):
    """Stored D masks of the segments of one flat tensor. Segment s covers elements
    ``[ends[s - 1], ends[s])``; where ``masked[s]``, element i is kept iff bit ``base[s] + i``
    of ``packed`` is set (kept values times ``scale``); other segments are stepped unmasked.
    The table's length is a power of two, padded with the tensor's length."""

    ends: torch.Tensor  # int64
    masked: torch.Tensor  # bool
    base: torch.Tensor  # int64: the bit of the segment's first element, minus its offset
    packed: torch.Tensor  # uint8: every masked segment's bits, each from a byte boundary
    scale: torch.Tensor  # float32


class SegmentDraws(NamedTuple):
    """Counter-based draws (F, update-dropout) of the segments of one flat tensor: where
    ``masked[s]``, element i is kept iff ``hash_elements(draw_key(seed, step, param_index[s]),
    base[s] + i) < threshold``, as :class:`DrawMask` draws the fragment on its own."""

    ends: torch.Tensor  # int64
    masked: torch.Tensor  # bool
    base: torch.Tensor  # int64: the fragment's start in its parameter, minus its offset
    param_index: torch.Tensor  # int64
    step_key: torch.Tensor  # int64, draws.step_key(seed, step)
    threshold: torch.Tensor  # int64
    scale: torch.Tensor  # float32


class SegmentRow(NamedTuple):
    """One segment of a flat tensor, on the host: where it ends (exclusive), whether it is
    masked, its ``base`` and (draws) its parameter's index."""

    end: int
    masked: bool
    base: int = 0
    param_index: int = 0


def segment_tables(
    rows: list[SegmentRow], numel: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ends, masked, base, param_index) on ``device``, padded to a power of two (a kernel is
    compiled once per padded length: 64, 128, ... segments)."""
    size = max(64, 1 << max(0, len(rows) - 1).bit_length())
    pad = [SegmentRow(numel, False)] * (size - len(rows))
    full = rows + pad
    ends = torch.tensor([r.end for r in full], dtype=torch.int64, device=device)
    masked = torch.tensor([r.masked for r in full], dtype=torch.bool, device=device)
    base = torch.tensor([r.base for r in full], dtype=torch.int64, device=device)
    index = torch.tensor([r.param_index for r in full], dtype=torch.int64, device=device)
    return ends, masked, base, index


def segment_bits(
    segments: Sequence[tuple[int, int, torch.Tensor | None]], numel: int, scale: torch.Tensor
) -> SegmentBits:
    """The D table of a flat tensor of ``numel`` elements from its segments in order, each
    ``(offset, numel, its packed keep bits or None where not masked)``; on ``scale``'s device."""
    rows, packed, bit = [], [], 0
    for offset, n, bits in segments:
        if bits is None:
            rows.append(SegmentRow(offset + n, False))
            continue
        rows.append(SegmentRow(offset + n, True, bit - offset))
        packed.append(bits)
        bit += 8 * bits.numel()
    ends, masked, base, _ = segment_tables(rows, numel, scale.device)
    return SegmentBits(ends, masked, base, torch.cat(packed).to(scale.device), scale)


def segment_draws(
    segments: Sequence[tuple[int, int, int | None, int]],
    numel: int,
    step_key: torch.Tensor,
    threshold: torch.Tensor,
    scale: torch.Tensor,
) -> SegmentDraws:
    """The F / update-dropout table of a flat tensor from its segments in order, each ``(offset,
    numel, its parameter's index or None where not masked, its first element's index in that
    parameter)``; on ``scale``'s device."""
    rows = [
        SegmentRow(offset + n, True, start - offset, index)
        if index is not None
        else SegmentRow(offset + n, False)
        for offset, n, index, start in segments
    ]
    ends, masked, base, param_index = segment_tables(rows, numel, scale.device)
    return SegmentDraws(ends, masked, base, param_index, step_key, threshold, scale)


def _adam_direction(
    param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, h: AdamScalars
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """New moments, and the update ``param_new - param`` of torch's AdamW (decay decoupled)."""
    exp_avg_new = exp_avg + (grad - exp_avg) * (1 - h.beta1)
    exp_avg_sq_new = exp_avg_sq * h.beta2 + grad * grad * (1 - h.beta2)
    decayed = param * (1 - h.lr * h.weight_decay)
    denom = torch.sqrt(exp_avg_sq_new) / h.bias_correction2_sqrt + h.eps
    param_new = decayed - (h.lr / h.bias_correction1) * exp_avg_new / denom
    return exp_avg_new, exp_avg_sq_new, param_new


def _keep_from_draw(numel_like: torch.Tensor, mask: DrawMask) -> torch.Tensor:
    index = torch.arange(numel_like.numel(), dtype=torch.int64, device=numel_like.device) + mask.start
    return hash_elements(param_key(mask.step_key, mask.param_index), index) < mask.threshold


def _keep_from_bits(numel_like: torch.Tensor, mask: BitsMask) -> torch.Tensor:
    index = torch.arange(numel_like.numel(), dtype=torch.int64, device=numel_like.device) + mask.bit_offset
    byte = mask.packed[index >> 3].to(torch.int64)
    return ((byte >> (index & 7)) & 1) == 1


def _segment_of(like: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(element index, its segment): the number of ``ends`` at or below the index, by binary
    lifting over a power-of-two table (log2 of its length gathers per element)."""
    index = torch.arange(like.numel(), dtype=torch.int64, device=like.device)
    seg = torch.zeros_like(index)
    half = ends.shape[0] // 2
    while half:
        probe = seg + half
        seg = torch.where(ends[probe - 1] <= index, probe, seg)
        half //= 2
    return index, seg


def _keep_from_segment_bits(like: torch.Tensor, mask: SegmentBits) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked, keep) per element; unmasked segments keep everything."""
    index, seg = _segment_of(like, mask.ends)
    masked = mask.masked[seg]
    bit = torch.where(masked, mask.base[seg] + index, 0)
    byte = mask.packed[bit >> 3].to(torch.int64)
    return masked, ~masked | (((byte >> (bit & 7)) & 1) == 1)


def _keep_from_segment_draws(like: torch.Tensor, mask: SegmentDraws) -> tuple[torch.Tensor, torch.Tensor]:
    index, seg = _segment_of(like, mask.ends)
    masked = mask.masked[seg]
    drawn = hash_elements(param_key(mask.step_key, mask.param_index[seg]), mask.base[seg] + index)
    return masked, ~masked | (drawn < mask.threshold)


def _segment_scale(masked: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.where(masked, scale, torch.ones_like(scale))


def _adam_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    frozen_unless: torch.Tensor | None = None,
) -> None:
    """One AdamW step in place; elements where ``frozen_unless`` is False keep their value."""
    m, v, p = _adam_direction(param, grad, exp_avg, exp_avg_sq, h)
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    param.copy_(p if frozen_unless is None else torch.where(frozen_unless, p, param))


def _masked(grad: torch.Tensor, keep: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, grad * scale, torch.zeros_like(grad))


# The step kernels take (param, grad, exp_avg, exp_avg_sq) as equal-length 1-d views, the
# step's AdamScalars and, where masked, a DrawMask or a BitsMask.


def step_plain(
    param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, h: AdamScalars
) -> None:
    _adam_step(param, grad, exp_avg, exp_avg_sq, h)


def step_grad_draw(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: DrawMask,
) -> None:
    keep = _keep_from_draw(grad, mask)
    _adam_step(param, _masked(grad, keep, mask.scale), exp_avg, exp_avg_sq, h)


def step_grad_bits(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: BitsMask,
) -> None:
    keep = _keep_from_bits(grad, mask)
    _adam_step(param, _masked(grad, keep, mask.scale), exp_avg, exp_avg_sq, h)


def step_grad_bits_strict(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: BitsMask,
) -> None:
    """D with a strict child: as ``step_grad_bits``, but masked elements keep their value (no
    weight decay either), so only the child network moves."""
    keep = _keep_from_bits(grad, mask)
    _adam_step(param, _masked(grad, keep, mask.scale), exp_avg, exp_avg_sq, h, frozen_unless=keep)


def step_update_draw(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: DrawMask,
) -> None:
    keep = _keep_from_draw(grad, mask)
    m, v, p = _adam_direction(param, grad, exp_avg, exp_avg_sq, h)
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    param.copy_(param + _masked(p - param, keep, mask.scale))


def step_segments_grad_bits(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: SegmentBits,
) -> None:
    """``step_grad_bits`` over every segment of a flat tensor (``plain`` where not masked)."""
    masked, keep = _keep_from_segment_bits(grad, mask)
    _adam_step(param, _masked(grad, keep, _segment_scale(masked, mask.scale)), exp_avg, exp_avg_sq, h)


def step_segments_grad_bits_strict(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: SegmentBits,
) -> None:
    masked, keep = _keep_from_segment_bits(grad, mask)
    g = _masked(grad, keep, _segment_scale(masked, mask.scale))
    _adam_step(param, g, exp_avg, exp_avg_sq, h, frozen_unless=keep)


def step_segments_grad_draw(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: SegmentDraws,
) -> None:
    masked, keep = _keep_from_segment_draws(grad, mask)
    _adam_step(param, _masked(grad, keep, _segment_scale(masked, mask.scale)), exp_avg, exp_avg_sq, h)


def step_segments_update_draw(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    h: AdamScalars,
    mask: SegmentDraws,
) -> None:
    masked, keep = _keep_from_segment_draws(grad, mask)
    m, v, p = _adam_direction(param, grad, exp_avg, exp_avg_sq, h)
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    param.copy_(torch.where(masked, param + _masked(p - param, keep, mask.scale), p))


def mask_draw_(grad: torch.Tensor, mask: DrawMask) -> None:
    """Gradient dropout as a pass of its own (when the mask must act before clipping)."""
    grad.copy_(_masked(grad, _keep_from_draw(grad, mask), mask.scale))


def mask_bits_(grad: torch.Tensor, mask: BitsMask) -> None:
    grad.copy_(_masked(grad, _keep_from_bits(grad, mask), mask.scale))


def update_draw_(master: torch.Tensor, before: torch.Tensor, mask: DrawMask) -> None:
    """Update dropout after any optimizer's step: keep ``scale * (new - old)`` where drawn."""
    keep = _keep_from_draw(master, mask)
    master.copy_(torch.where(keep, before + (master - before) * mask.scale, before))


_EAGER: dict[str, Kernel] = {
    "mask_draw": mask_draw_,
    "mask_bits": mask_bits_,
    "update_draw_after": update_draw_,
    "plain": step_plain,
    "grad_draw": step_grad_draw,
    "grad_bits": step_grad_bits,
    "grad_bits_strict": step_grad_bits_strict,
    "update_draw": step_update_draw,
    "segments_grad_bits": step_segments_grad_bits,
    "segments_grad_bits_strict": step_segments_grad_bits_strict,
    "segments_grad_draw": step_segments_grad_draw,
    "segments_update_draw": step_segments_update_draw,
}
_COMPILED: dict[str, Kernel] = {}


def kernel(name: str, compiled: bool) -> Kernel:
    """The kernel ``name``, compiled once per process when ``compiled`` (eager otherwise)."""
    if not compiled:
        return _EAGER[name]
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(_EAGER[name], dynamic=True, fullgraph=True)
    return _COMPILED[name]


def next_step_state(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, Any]:
    """``p``'s AdamW state in ``optimizer`` (torch's layout: ``step``, ``exp_avg``,
    ``exp_avg_sq``; made at the first step) with its step counter advanced for this step."""
    state = optimizer.state[p]
    if len(state) == 0:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    return state


def supports(optimizer: torch.optim.Optimizer) -> str | None:
    """None if the fused step reproduces ``optimizer``'s own, else the reason it does not."""
    # (childtuning.hf2021.AdamWHF2021 is recognised by its "hf2021" default: that module
    # imports this one)
    if type(optimizer) not in (torch.optim.AdamW, torch.optim.Adam) and not optimizer.defaults.get("hf2021"):
        return f"{type(optimizer).__name__} is not AdamW"
    for group in optimizer.param_groups:
        if (
            group.get("amsgrad")
            or group.get("maximize")
            or group.get("capturable")
            or group.get("differentiable")
        ):
            return "amsgrad, maximize, capturable and differentiable are not fused"
        if type(optimizer) is torch.optim.Adam and group.get("weight_decay", 0.0):
            return "Adam's L2 weight decay is not fused (use AdamW)"
        if isinstance(group["lr"], torch.Tensor):
            return "tensor learning rates are not fused"
    return None


def scalars(
    group: dict[str, Any], step: float, device: torch.device, out: AdamScalars | None = None
) -> AdamScalars:
    """The AdamW scalars of ``group`` at ``step`` (1-based), as 0-d float32 tensors.

    With ``out`` (the scalars of an earlier step, on ``device``) they are written into its
    tensors with ``fill_``, a kernel launch, and ``out`` is returned: making new CUDA tensors from
    Python numbers copies from pageable host memory, which blocks the host until the GPU has
    finished everything queued before it, seven times a parameter a step otherwise.
    """
    beta1, beta2 = group["betas"]
    lr, eps, decay = group["lr"], group["eps"], group.get("weight_decay", 0.0)
    correction2_sqrt = math.sqrt(1 - beta2**step)
    if group.get("hf2021"):
        # The 2021 Hugging Face rule (childtuning.hf2021) in torch's formula: with
        # lr' = lr (1 - lr wd), wd' = wd / (1 - lr wd) and eps' = eps / sqrt(1 - beta2^t),
        #   p (1 - lr' wd') - lr' / bc1 * m / (sqrt(v) / bc2s + eps')
        # = (p - lr bc2s / bc1 * m / (sqrt(v) + eps)) (1 - lr wd): eps before the bias
        # correction, the decay after the update.
        kept = 1 - lr * decay
        if kept <= 0:
            raise ValueError(f"adamw-hf2021 needs lr * weight_decay < 1 (got {lr} * {decay})")
        lr, decay, eps = lr * kept, decay / kept, eps / correction2_sqrt
    values = (lr, beta1, beta2, eps, decay, 1 - beta1**step, correction2_sqrt)
    if out is not None and out.lr.device == device:
        for tensor, value in zip(out, values, strict=True):
            tensor.fill_(float(value))
        return out
    return AdamScalars(*(torch.tensor(float(v), dtype=torch.float32, device=device) for v in values))
