"""The ChildTuning configuration: one typed object, checked once, at the boundary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["vanilla", "childtuning-d", "childtuning-f", "update-dropout"]
MODES: tuple[str, ...] = ("vanilla", "childtuning-d", "childtuning-f", "update-dropout")

# The official implementation masks, in D, only parameters whose name contains "layer" (the
# encoder layers); embeddings, pooler and classifier train normally. F masks every parameter.
DEFAULT_D_FILTER = "layer"


@dataclass(kw_only=True, slots=True)
class ChildTuningConfig:
    """What ChildTuning does to each optimizer step.

    mode: ``vanilla`` (nothing), ``childtuning-d`` (fixed Fisher mask on the gradient),
        ``childtuning-f`` (fresh Bernoulli(p) mask on the gradient each step) or
        ``update-dropout`` (fresh Bernoulli(p) mask on the optimizer's update each step).
    reserve_p: the fraction of elements kept, 0 < p <= 1.
    param_filter: a parameter is eligible for masking when its name contains this substring.
        ``None`` takes the mode's default: ``"layer"`` for D (the official choice), every
        parameter for F and update-dropout. ``""`` also matches every parameter.
    fisher_num_batches: batches in the Fisher pass (D); ``None`` is one full pass.
    fisher_clip_norm: each parameter's gradient is clipped to this L2 norm before squaring
        (official: 1.0); ``None`` disables the clipping.
    fisher_train_mode: run the Fisher pass with dropout on (official: True).
    rescale: divide kept values by p. ``None`` takes the mode's default: False for D (the
        official code does not divide), True for F and update-dropout.
    seed: keys the counter-based draws of F and update-dropout.
    fused: run the masked AdamW update as one compiled pass (AdamW/Adam only); ``None``
        chooses it where it applies.
    """

    mode: Mode = "childtuning-d"
    reserve_p: float = 0.3
    param_filter: str | None = None
    fisher_num_batches: int | None = None
    fisher_clip_norm: float | None = 1.0
    fisher_train_mode: bool = True
    rescale: bool | None = None
    seed: int = 42
    fused: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: unknown mode {self.mode!r}; allowed: {', '.join(MODES)}")
        p = self.reserve_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not (0.0 < float(p) <= 1.0):
            raise ValueError(f"reserve_p: must be a number with 0 < p <= 1 (got {p!r})")
        self.reserve_p = float(p)
        if self.param_filter is not None and not isinstance(self.param_filter, str):
            raise ValueError(
                f"param_filter: must be a substring of parameter names or None (got {self.param_filter!r})"
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
    def effective_filter(self) -> str:
        """The substring that makes a parameter eligible ("" matches all)."""
        if self.param_filter is not None:
            return self.param_filter
        return DEFAULT_D_FILTER if self.mode == "childtuning-d" else ""

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

    @property
    def draws_per_step(self) -> bool:
        return self.mode in ("childtuning-f", "update-dropout")
