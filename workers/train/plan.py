"""How a job's examples become optimizer steps (:class:`Plan`), its learning-rate schedule
(:meth:`Plan.lr_factor`), the optimizer's parameter groups (:func:`optimizer_groups`), the DeepSpeed
configuration (:func:`deepspeed_config`) and the seed of each step's dropout (:func:`step_seed`).
Pure functions of the spec and the data's size: no process group, no device.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from service.core.contract import JobSpec
from workers.train.errors import JobError

__all__ = ["NO_DECAY", "Plan", "deepspeed_config", "optimizer_groups", "step_seed"]


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of a step's dropout on a rank: a resumed run draws what the uninterrupted one drew."""
    digest = hashlib.blake2b(f"childtune/dropout/{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


# Biases and norms are not decayed (BERT's LayerNorm, Llama's RMSNorm, GPT-2's ln_1/ln_2/ln_f).
NO_DECAY: tuple[str, ...] = (
    "bias",
    "LayerNorm.weight",
    "layernorm.weight",
    "norm.weight",
    ".ln_1.weight",
    ".ln_2.weight",
    ".ln_f.weight",
)


def optimizer_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: decay on weights, none on biases and norms (:data:`NO_DECAY`)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True, slots=True)
class Plan:
    """How the job's examples become optimizer steps."""

    world_size: int
    micro_per_rank: int  # examples per rank per forward/backward
    grad_accum: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def make(cls, spec: JobSpec, num_train: int, world_size: int) -> Plan:
        hp = spec.hyperparameters
        per_step = hp.batch_size * hp.gradient_accumulation_steps
        steps_per_epoch = (num_train // hp.batch_size) // hp.gradient_accumulation_steps
        if steps_per_epoch < 1:
            raise JobError(
                f"hyperparameters.batch_size: the training set has {num_train} examples, fewer than one "
                f"optimizer step takes (batch_size {hp.batch_size} x gradient_accumulation_steps "
                f"{hp.gradient_accumulation_steps} = {per_step}); lower them or give more data"
            )
        total = hp.max_steps if hp.max_steps is not None else hp.epochs * steps_per_epoch
        return cls(
            world_size=world_size,
            micro_per_rank=hp.batch_size // world_size,
            grad_accum=hp.gradient_accumulation_steps,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            warmup_steps=math.ceil(hp.warmup_ratio * total),
        )

    def lr_factor(self, step: int) -> float:
        """The learning rate's factor after ``step`` scheduler steps: linear warmup, then linear
        decay to 0 at the last step."""
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))


def deepspeed_config(spec: JobSpec, plan: Plan) -> dict[str, Any]:
    """The DeepSpeed engine's configuration: the plan's batches, ZeRO stage, clipping, precision."""
    hp, res = spec.hyperparameters, spec.resources
    return {
        "train_micro_batch_size_per_gpu": plan.micro_per_rank,
        "gradient_accumulation_steps": plan.grad_accum,
        "train_batch_size": plan.micro_per_rank * plan.grad_accum * plan.world_size,
        "zero_optimization": {"stage": res.zero_stage},
        "gradient_clipping": hp.max_grad_norm,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "bf16": {"enabled": res.precision == "bf16"},
        "fp16": {"enabled": res.precision == "fp16", "initial_scale_power": 16},
    }
