"""The ``hyperparameters`` and ``resources`` parts of a job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from service.core.contract.fields import Float, Int, spec_error
from service.core.contract.vocabulary import (
    MAX_NEW_TOKENS,
    MAX_NODES,
    MAX_SAMPLES,
    MAX_STEPS,
    SEED_MAX,
    Device,
    Optimizer,
    Precision,
)


class Hyperparameters(BaseModel):
    """Optimisation settings (defaults: the official ChildTuning run.sh's, as ``recipe:
    childtuning-paper``)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"epochs": 3, "batch_size": 16, "learning_rate": 4e-5, "seed": 42},
                {"max_steps": 20, "batch_size": 8, "eval_every": 10, "save_every": 10},
            ]
        },
    )

    epochs: Int = Field(default=3, ge=1, le=1000)
    batch_size: Int = Field(
        default=16,
        ge=1,
        le=65536,
        description="Global micro-batch (summed over ranks); divisible by num_ranks.",
    )
    learning_rate: Float = Field(default=4e-5, gt=0, le=1)
    weight_decay: Float = Field(default=0.01, ge=0, le=1)
    warmup_ratio: Float = Field(default=0.1, ge=0, le=1)
    optimizer: Optimizer = Field(
        default="adamw",
        description="The update rule: adamw (torch's AdamW) or adamw-hf2021 (transformers.AdamW of "
        "2021, which the official ChildTuning code follows: eps added before the bias correction, "
        "the weight decay applied after the update).",
    )
    max_seq_length: Int = Field(default=128, ge=8, le=8192)
    seed: Int = Field(default=42, ge=0, le=SEED_MAX)
    eval_every: Int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Optimizer steps; null = every epoch end."
    )
    gradient_accumulation_steps: Int = Field(default=1, ge=1, le=4096)
    max_grad_norm: Float = Field(
        default=1.0, ge=0, le=1e6, description="Gradient clipping norm; 0 disables clipping."
    )
    rdrop_alpha: Float = Field(default=0.0, ge=0, le=100, description="R-Drop weight; 0 disables R-Drop.")
    max_steps: Int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Optimizer steps; overrides epochs when set."
    )
    keep_checkpoints: Int = Field(default=2, ge=1, le=1000, description="Most recent checkpoints kept.")
    early_stopping_patience: Int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description="Stop training once the main dev metric has not improved for this many evaluations "
        "in a row; that evaluation is then the final one (model/, final_metrics). null = train to the end.",
    )
    save_every: Int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Optimizer steps; null = every epoch end."
    )
    eval_samples: Int = Field(
        default=3,
        ge=0,
        le=MAX_SAMPLES,
        description="causal-lm: at each evaluation, greedy answers to the first n evaluation prompts are "
        "recorded (the job's samples event, shown by the CLI and the dashboard); 0 = none.",
    )
    max_new_tokens: Int = Field(
        default=32,
        ge=1,
        le=MAX_NEW_TOKENS,
        description="causal-lm: the most tokens generated per answer (samples, exact_match).",
    )
    eval_at_start: bool = Field(
        default=False,
        description="Also evaluate once before the first step: an eval record at step 0 (at_start: true), "
        "the base model's dev score. It is never best or final and does not count for early "
        "stopping; a resumed job does not repeat it.",
    )

    @model_validator(mode="after")
    def _hf2021_decay_is_below_one_step(self) -> Hyperparameters:
        if self.optimizer == "adamw-hf2021" and self.learning_rate * self.weight_decay >= 1:
            raise spec_error(
                "adamw-hf2021 multiplies the weights by 1 - learning_rate * weight_decay each step: "
                "keep that product below 1",
                field="weight_decay",
            )
        return self


class Resources(BaseModel):
    """Where and how the job runs. ``num_gpus`` is accepted as another name for ``num_ranks``.

    ``num_ranks`` is always the job's total; ``nodes`` machines each run ``num_ranks / nodes`` of
    them (:attr:`ranks_per_node`), so ``num_ranks`` must be a multiple of ``nodes``."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"num_ranks": 1, "device": "cpu"},
                {"num_gpus": 4, "zero_stage": 2, "precision": "bf16", "device": "cuda"},
                {"nodes": 2, "num_gpus": 16, "zero_stage": 3, "precision": "bf16", "device": "cuda"},
            ]
        },
    )

    num_ranks: Int = Field(
        default=1,
        ge=1,
        le=1024,
        validation_alias=AliasChoices("num_ranks", "num_gpus"),
        description=(
            "Training processes of the whole job, over all its nodes (one per GPU on cuda); also "
            "accepted as num_gpus."
        ),
    )
    nodes: Int = Field(
        default=1,
        ge=1,
        le=MAX_NODES,
        description=(
            "Machines the job runs on together (gang-scheduled); each runs num_ranks / nodes ranks, "
            "so num_ranks must be a multiple of nodes."
        ),
    )
    zero_stage: Int = Field(default=2, ge=0, le=3, description="DeepSpeed ZeRO stage, 0..3.")
    precision: Precision = "fp32"
    device: Device = Field(default="auto", description="auto = cuda when the worker has GPUs, else cpu.")

    @model_validator(mode="before")
    @classmethod
    def _one_count(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "num_ranks" in data and "num_gpus" in data:
            if data["num_ranks"] != data["num_gpus"]:
                raise spec_error(
                    "num_ranks and num_gpus are the same setting; give one of them", field="num_gpus"
                )
            data = {k: v for k, v in data.items() if k != "num_gpus"}
        return data

    @model_validator(mode="after")
    def _ranks_split_over_nodes(self) -> Resources:
        if self.num_ranks % self.nodes:
            example = self.nodes * max(1, self.num_ranks // self.nodes)
            raise spec_error(
                f"{self.num_ranks} ranks cannot be split evenly over {self.nodes} nodes; num_ranks is the "
                f"job's total: give a multiple of nodes (e.g. {example} ranks)",
                field="nodes",
            )
        return self

    @property
    def ranks_per_node(self) -> int:
        """Ranks each of the job's machines runs."""
        return self.num_ranks // self.nodes

    @property
    def num_gpus(self) -> int:
        """The same number as :attr:`num_ranks`."""
        return self.num_ranks
