"""The ChildTuning configuration: one typed object, checked once, at the boundary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Mode = Literal["vanilla", "childtuning-d", "childtuning-f", "update-dropout"]
MODES: tuple[str, ...] = ("vanilla", "childtuning-d", "childtuning-f", "update-dropout")

ClipOrder = Literal["clip-then-mask", "mask-then-clip"]
CLIP_ORDERS: tuple[str, ...] = ("clip-then-mask", "mask-then-clip")

# The official implementation masks, in D, only parameters whose name contains "layer" (the
# encoder layers of BERT and RoBERTa); embeddings, pooler and classifier train normally. F
# masks every parameter. The default D filter keeps that word and adds the blocks of GPT-2-style
# decoders (``transformer.h.N``), which "layer" would miss; Llama-style decoders name theirs
# ``model.layers.N`` (matched by "layer"). On BERT, RoBERTa and Llama both select the same
# parameters as "layer" alone: their names hold no ``.h.N.``.
OFFICIAL_D_FILTER = "layer"
GPT2_BLOCKS = r"(?:^|\.)h\.\d+\."
DEFAULT_D_FILTER: tuple[str, ...] = (OFFICIAL_D_FILTER, GPT2_BLOCKS)


def compile_filter(param_filter: str | list[str] | tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for a filter: a pattern, or a list of patterns (any may match).

    A plain word is a pattern that matches where the word occurs, so the official substring
    filter ``"layer"`` keeps its meaning. Raises ValueError naming ``param_filter``."""
    patterns = [param_filter] if isinstance(param_filter, str) else list(param_filter)
    if not patterns or not all(isinstance(x, str) for x in patterns):
        raise ValueError(
            f"param_filter: must be a regular expression or a non-empty list of them (got {param_filter!r})"
        )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"param_filter: {pattern!r} is not a regular expression ({exc})") from None
    return re.compile("|".join(f"(?:{x})" for x in patterns))


@dataclass(kw_only=True, slots=True)
class ChildTuningConfig:
    """What ChildTuning does to each optimizer step.

    mode: ``vanilla`` (nothing), ``childtuning-d`` (fixed Fisher mask on the gradient),
        ``childtuning-f`` (fresh Bernoulli(p) mask on the gradient each step) or
        ``update-dropout`` (fresh Bernoulli(p) mask on the optimizer's update each step).
    reserve_p: the fraction of elements kept, 0 < p <= 1.
    param_filter: a parameter is eligible for masking when this regular expression (or any of
        this list of them) is found in its name (``re.search``). ``None`` takes the mode's
        default: for D, ``"layer"`` (the official choice) or a GPT-2-style block
        (:data:`DEFAULT_D_FILTER`); every parameter for F and
        update-dropout. ``""`` also matches every parameter.
    fisher_num_batches: batches in the Fisher pass (D); ``None`` is one full pass.
    fisher_clip_norm: each parameter's gradient is clipped to this L2 norm before squaring
        (official: 1.0); ``None`` disables the clipping.
    fisher_train_mode: run the Fisher pass with dropout on (official: True).
    rescale: divide kept values by p. ``None`` takes the mode's default: False for D (the
        official code does not divide), True for F and update-dropout.
    seed: keys the counter-based draws of F and update-dropout.
    fused: run the masked AdamW update as one compiled pass (AdamW/Adam only); ``None``
        chooses it where it applies.
    clip_order: under DeepSpeed with gradient clipping, ``"clip-then-mask"`` (the official
        order: the whole gradient is clipped, then masked inside the optimizer's step) or
        ``"mask-then-clip"`` (the masked gradient is clipped; F's clip then sees a norm about
        1/sqrt(p) larger). A torch optimizer masks inside ``step()``, after the caller's clip.
    strict_child: D only. Masked elements get no update at all, weight decay included, so
        the finished model differs from the base exactly in the child network (inside the
        filtered parameters). Off by default: the official optimizer decays every element.
    """

    mode: Mode = "childtuning-d"
    reserve_p: float = 0.3
    param_filter: str | list[str] | None = None
    fisher_num_batches: int | None = None
    fisher_clip_norm: float | None = 1.0
    fisher_train_mode: bool = True
    rescale: bool | None = None
    seed: int = 42
    fused: bool | None = None
    clip_order: ClipOrder = "clip-then-mask"
    strict_child: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: unknown mode {self.mode!r}; allowed: {', '.join(MODES)}")
        p = self.reserve_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not (0.0 < float(p) <= 1.0):
            raise ValueError(f"reserve_p: must be a number with 0 < p <= 1 (got {p!r})")
        self.reserve_p = float(p)
        if self.param_filter is not None:
            compile_filter(self.param_filter)
        if self.clip_order not in CLIP_ORDERS:
            raise ValueError(f"clip_order: must be one of {', '.join(CLIP_ORDERS)} (got {self.clip_order!r})")
        if not isinstance(self.strict_child, bool):
            raise ValueError(f"strict_child: must be true or false (got {self.strict_child!r})")
        if self.strict_child and self.mode != "childtuning-d":
            raise ValueError(
                f"strict_child: only for childtuning-d (its child is fixed); "
                f"{self.mode!r} draws a new one each step"
            )
        if self.fisher_num_batches is not None and (
            isinstance(self.fisher_num_batches, bool)
            or not isinstance(self.fisher_num_batches, int)
            or self.fisher_num_batches < 1
        ):
            raise ValueError(
                f"fisher_num_batches: must be an integer >= 1, or None for one full pass "
                f"(got {self.fisher_num_batches!r})"
            )
        if self.fisher_clip_norm is not None and not (
            isinstance(self.fisher_clip_norm, int | float) and self.fisher_clip_norm > 0
        ):
            raise ValueError(
                f"fisher_clip_norm: must be > 0, or None to disable clipping (got {self.fisher_clip_norm!r})"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not (0 <= self.seed < 2**63):
            raise ValueError(f"seed: must be an integer in [0, 2**63) (got {self.seed!r})")

    @property
    def effective_filter(self) -> str | list[str]:
        """The pattern (or patterns) that make a parameter eligible ("" matches all)."""
        if self.param_filter is not None:
            return self.param_filter
        return list(DEFAULT_D_FILTER) if self.mode == "childtuning-d" else ""

    def selects(self, name: str) -> bool:
        """Whether parameter ``name`` is eligible for masking."""
        return compile_filter(self.effective_filter).search(name) is not None

    @property
    def effective_rescale(self) -> bool:
        if self.rescale is not None:
            return self.rescale
        return self.mode in ("childtuning-f", "update-dropout")

    @property
    def scale(self) -> float:
        """The factor applied to kept values (1/p when rescaling)."""
        return 1.0 / self.reserve_p if self.effective_rescale else 1.0

    @property
    def masks_gradient(self) -> bool:
        return self.mode in ("childtuning-d", "childtuning-f")
