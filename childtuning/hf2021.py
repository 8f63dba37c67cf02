"""``AdamWHF2021``: AdamW as Hugging Face's ``transformers.AdamW`` computed it in 2021, the rule
the official ChildTuning code's ``ChildTuningAdamW`` (alibaba/AliceMind) follows.

Two differences from ``torch.optim.AdamW``, both per step:

- ``eps`` is added to ``sqrt(v)`` *before* the bias correction, which is folded into the step
  size instead: ``p -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)``;
- the weight decay is applied *after* that update, to the updated weights:
  ``p -= lr * weight_decay * p``.

The state is torch's AdamW's (``step``, ``exp_avg``, ``exp_avg_sq``), so the fused ChildTuning
step (``fused_adamw``, which recognises this class) and checkpoints treat both alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from childtuning.fused_adamw import next_step_state

__all__ = ["AdamWHF2021"]


class AdamWHF2021(torch.optim.Optimizer):
    """AdamW with the 2021 Hugging Face rule (see the module docstring); bias correction always on."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0 (got {lr}, {eps}, {weight_decay})")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1) (got {betas})")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "hf2021": True}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = next_step_state(self, p)
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss
