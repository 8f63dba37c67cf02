"""The ``childtuning`` part of a job: which ChildTuning variant runs, and its options."""

from __future__ import annotations

import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from service.core.contract.fields import Float, Int, short_repr, spec_error
from service.core.contract.vocabulary import (
    MAX_STEPS,
    SEED_MAX,
    ClipOrder,
    Mode,
)


class ChildTuningSpec(BaseModel):
    """Which ChildTuning variant runs, and its options (mirrors ``childtuning.ChildTuningConfig``)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"mode": "childtuning-d", "reserve_p": 0.3},
                {"mode": "childtuning-f", "reserve_p": 0.4},
                {"mode": "update-dropout", "reserve_p": 0.3, "param_filter": "layer"},
                {"mode": "vanilla"},
            ]
        },
    )

    mode: Mode = Field(
        default="childtuning-d",
        description="vanilla | childtuning-d (fixed Fisher mask on the gradient) | childtuning-f "
        "(fresh Bernoulli(p) gradient mask each step) | update-dropout (Bernoulli(p) mask on the "
        "optimizer's update)",
    )
    reserve_p: Float = Field(default=0.3, gt=0, le=1, description="Fraction of elements kept, 0 < p <= 1.")
    param_filter: str | list[str] | None = Field(
        default=None,
        description="Which parameters are masked: a regular expression found in the parameter's name "
        "(re.search), or a list of them (any may match); null = mode default (for childtuning-d the "
        'official "layer", which also selects Llama-style blocks model.layers.N, plus GPT-2-style blocks '
        'transformer.h.N; every parameter otherwise); "" matches every parameter.',
    )
    fisher_num_batches: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description="Batches in the Fisher pass (childtuning-d); null = one full pass.",
    )
    fisher_clip_norm: Float | None = Field(
        default=1.0,
        gt=0,
        le=1e6,
        description="Per-tensor gradient clip norm before squaring; null = no clipping.",
    )
    rescale: bool | None = Field(
        default=None,
        description="Divide kept values by p; null = mode default (false for childtuning-d as in the "
        "official code, true for childtuning-f and update-dropout).",
    )
    seed: Int | None = Field(
        default=None, ge=0, le=SEED_MAX, description="Seed of the per-step draws; null = the job's seed."
    )
    clip_order: ClipOrder = Field(
        default="clip-then-mask",
        description="With gradient clipping (hyperparameters.max_grad_norm): clip-then-mask (the "
        "official order: clip the whole gradient, then mask it) or mask-then-clip (clip the masked "
        "gradient).",
    )
    strict_child: bool = Field(
        default=False,
        description="childtuning-d only: masked elements get no update at all, weight decay included, "
        "so the finished model differs from the base only in the child network; the job also "
        "exports delta/ (the child as a sparse change of the base). Off = the official optimizer.",
    )
    audit_strict: bool = Field(
        default=False,
        description="childtuning-d only: fail the job when the mask audit finds an element outside "
        "the child that moved (meaningful with strict_child).",
    )

    @field_validator("param_filter", mode="before")
    @classmethod
    def _filter_compiles(cls, value: Any) -> Any:
        if value is None:
            return value
        patterns = [value] if isinstance(value, str) else value
        if (
            not isinstance(patterns, list)
            or not 1 <= len(patterns) <= 32
            or not all(isinstance(x, str) and len(x) <= 200 for x in patterns)
        ):
            raise spec_error(
                f"must be a regular expression, or a list of 1 to 32 of them, each at most 200 "
                f"characters (got {short_repr(value)}); null takes the mode's default"
            )
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise spec_error(
                    f"{pattern!r} is not a regular expression ({exc}); escape special characters "
                    "with a backslash, or give a plain word found in the parameter names"
                ) from None
        return value

    @model_validator(mode="after")
    def _d_only_options(self) -> ChildTuningSpec:
        for name in ("strict_child", "audit_strict"):
            if getattr(self, name) and self.mode != "childtuning-d":
                raise spec_error(
                    f"{name} is for mode childtuning-d (its child is fixed); mode {self.mode} draws a "
                    f"new mask each step: set {name} to false or mode to childtuning-d",
                    name,
                )
        return self

    def config_kwargs(self, default_seed: int) -> dict[str, Any]:
        """Keyword arguments for ``childtuning.ChildTuningConfig`` (``seed`` defaults to ``default_seed``)."""
        return {
            "mode": self.mode,
            "reserve_p": self.reserve_p,
            "param_filter": self.param_filter,
            "fisher_num_batches": self.fisher_num_batches,
            "fisher_clip_norm": self.fisher_clip_norm,
            "rescale": self.rescale,
            "seed": self.seed if self.seed is not None else default_seed,
            "clip_order": self.clip_order,
            "strict_child": self.strict_child,
        }
