"""AdamW with the ChildTuning mask fused into its one pass over memory.

torch's foreach AdamW reads and writes parameters, gradients and both moments several
times per step; a separate masking pass over 110M gradients costs about as much again. Here
each kernel does draw (or bit unpack), mask, moment updates, decoupled weight decay and the
parameter update in one pass, compiled by ``torch.compile`` (inductor). The arithmetic
follows ``torch.optim.adamw`` op for op; only the rounding of fused multiply-adds differs.

Hyperparameters travel as 0-d tensors so a changing learning rate does not recompile; the
segment length is dynamic, so one compiled kernel per variant serves every parameter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from childtuning.draws import hash_elements

log = logging.getLogger(__name__)

Kernel = Callable[..., None]


def _adam_direction(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt):
    """New moments, and the update ``param_new - param`` of torch's AdamW (decay decoupled)."""
    exp_avg_new = exp_avg + (grad - exp_avg) * (1 - beta1)
    exp_avg_sq_new = exp_avg_sq * beta2 + grad * grad * (1 - beta2)
    decayed = param * (1 - lr * weight_decay)
    denom = torch.sqrt(exp_avg_sq_new) / bc2_sqrt + eps
    param_new = decayed - (lr / bc1) * exp_avg_new / denom
    return exp_avg_new, exp_avg_sq_new, param_new


def _keep_from_draw(numel_like: torch.Tensor, key, start, threshold) -> torch.Tensor:
    index = torch.arange(numel_like.numel(), dtype=torch.int64, device=numel_like.device) + start
    return hash_elements(key, index) < threshold


def _keep_from_bits(numel_like: torch.Tensor, packed: torch.Tensor, bit_offset) -> torch.Tensor:
    index = torch.arange(numel_like.numel(), dtype=torch.int64, device=numel_like.device) + bit_offset
    byte = packed[index >> 3].to(torch.int64)
    return ((byte >> (index & 7)) & 1) == 1


def _adam_step(param, grad, exp_avg, exp_avg_sq, *hyper) -> None:
    m, v, p = _adam_direction(param, grad, exp_avg, exp_avg_sq, *hyper)
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    param.copy_(p)


def _masked(grad: torch.Tensor, keep: torch.Tensor, scale) -> torch.Tensor:
    return torch.where(keep, grad * scale, torch.zeros_like(grad))


# Kernel arguments: (param, grad, exp_avg, exp_avg_sq, *hyper, *mask_args), where hyper is
# (lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt), see scalars(), and mask_args is
# (key, start, threshold, scale) for a draw or (packed, bit_offset, scale) for D bits.
NUM_HYPER = 7


def step_plain(param, grad, exp_avg, exp_avg_sq, *hyper):
    _adam_step(param, grad, exp_avg, exp_avg_sq, *hyper)


def step_grad_draw(param, grad, exp_avg, exp_avg_sq, *args):
    hyper, (key, start, threshold, scale) = args[:NUM_HYPER], args[NUM_HYPER:]
    keep = _keep_from_draw(grad, key, start, threshold)
    _adam_step(param, _masked(grad, keep, scale), exp_avg, exp_avg_sq, *hyper)


def step_grad_bits(param, grad, exp_avg, exp_avg_sq, *args):
    hyper, (packed, bit_offset, scale) = args[:NUM_HYPER], args[NUM_HYPER:]
    keep = _keep_from_bits(grad, packed, bit_offset)
    _adam_step(param, _masked(grad, keep, scale), exp_avg, exp_avg_sq, *hyper)


def step_update_draw(param, grad, exp_avg, exp_avg_sq, *args):
    hyper, (key, start, threshold, scale) = args[:NUM_HYPER], args[NUM_HYPER:]
    keep = _keep_from_draw(grad, key, start, threshold)
    m, v, p = _adam_direction(param, grad, exp_avg, exp_avg_sq, *hyper)
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    param.copy_(param + _masked(p - param, keep, scale))


def mask_draw_(grad, key, start, threshold, scale):
    """Gradient dropout as a pass of its own (when the mask must act before clipping)."""
    grad.copy_(_masked(grad, _keep_from_draw(grad, key, start, threshold), scale))


def mask_bits_(grad, packed, bit_offset, scale):
    grad.copy_(_masked(grad, _keep_from_bits(grad, packed, bit_offset), scale))


def update_draw_(master, before, key, start, threshold, scale):
    """Update dropout after any optimizer's step: keep ``scale * (new - old)`` where drawn."""
    keep = _keep_from_draw(master, key, start, threshold)
    master.copy_(torch.where(keep, before + (master - before) * scale, before))


_EAGER: dict[str, Kernel] = {
    "mask_draw": mask_draw_,
    "mask_bits": mask_bits_,
    "update_draw_after": update_draw_,
    "plain": step_plain,
    "grad_draw": step_grad_draw,
    "grad_bits": step_grad_bits,
    "update_draw": step_update_draw,
}
_COMPILED: dict[str, Kernel] = {}


def kernel(name: str, compiled: bool) -> Kernel:
    """The kernel ``name``, compiled once per process when ``compiled`` (eager otherwise)."""
    if not compiled:
        return _EAGER[name]
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(_EAGER[name], dynamic=True, fullgraph=True)
    return _COMPILED[name]


def supports(optimizer: torch.optim.Optimizer) -> str | None:
    """None if the fused step reproduces ``optimizer``'s own, else the reason it does not."""
    if type(optimizer) not in (torch.optim.AdamW, torch.optim.Adam):
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


def scalars(group: dict[str, Any], step: float, device: torch.device) -> list[torch.Tensor]:
    """lr, beta1, beta2, eps, weight_decay and both bias corrections as 0-d tensors."""
    beta1, beta2 = group["betas"]
    wd = group.get("weight_decay", 0.0)
    bc1 = 1 - beta1**step
    bc2_sqrt = math.sqrt(1 - beta2**step)
    vals = (group["lr"], beta1, beta2, group["eps"], wd, bc1, bc2_sqrt)
    return [torch.tensor(float(v), dtype=torch.float32, device=device) for v in vals]
