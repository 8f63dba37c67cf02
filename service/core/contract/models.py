"""The job contract's pydantic models: :class:`JobSpec`, made of its parts (:class:`DatasetSpec` in
``dataset``, :class:`ChildTuningSpec` in ``method``, :class:`Hyperparameters` and
:class:`Resources` in ``training``), with their validators.

The workers build the method's ``childtuning.ChildTuningConfig`` from
:meth:`ChildTuningSpec.config_kwargs`.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. A validator's own check raises a ``spec_error`` (``fields.spec_error``), which
``service.core.contract.messages`` turns into a ``(field path, message)`` pair.

Semantics worth knowing (the training program implements them):

- ``hyperparameters.batch_size`` is the GLOBAL micro-batch: the examples of one forward and
  backward pass summed over all ranks. Each rank processes ``batch_size / num_ranks`` of them,
  so ``batch_size`` must be divisible by ``resources.num_ranks``; the examples of every global
  batch are then the same whatever the number of ranks. One optimizer step sees
  ``batch_size * gradient_accumulation_steps`` examples.
- ``max_steps`` (optimizer steps), when set, overrides ``epochs``: training runs that many
  steps (cycling through epochs) and the learning-rate schedule spans them.
- ``eval_every`` / ``save_every`` count optimizer steps; ``None`` means at the end of every
  epoch.
- ``childtuning.seed`` ``None`` takes ``hyperparameters.seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.core.contract.dataset import DatasetSpec
from service.core.contract.fields import spec_error
from service.core.contract.method import ChildTuningSpec
from service.core.contract.training import Hyperparameters, Resources
from service.core.contract.urls import url_problem
from service.core.contract.vocabulary import (
    MAX_WEBHOOK_URL,
    METADATA_MAX_ENTRIES,
    METADATA_MAX_KEY,
    METADATA_MAX_VALUE,
    OFFICIAL_WARMUP,
    RDROP_PAPER_ALPHA,
    RDROP_PAPER_BATCH,
    RECIPES,
    Recipe,
)


class JobSpec(BaseModel):
    """A fine-tune job: the body of ``POST /v1/jobs`` and the content of a job's ``job.json``."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "model": "minilm-l6",
                    "dataset": {"preset": "glue/rte"},
                    "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
                    "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 4e-5, "seed": 42},
                    "resources": {"num_gpus": 2, "zero_stage": 2, "precision": "bf16"},
                    "metadata": {"study": "rte-p-sweep"},
                },
                {
                    "model": "minilm-l6",
                    "dataset": {
                        "train_file": "file-3f2a9c",
                        "eval_file": "file-81b7d0",
                        "text_column": "text",
                        "label_column": "label",
                        "task_type": "classification",
                    },
                    "childtuning": {"mode": "childtuning-f", "reserve_p": 0.4},
                },
            ]
        },
    )

    model: str = Field(
        ...,
        min_length=1,
        max_length=500,
        description='"minilm-l6" or "smollm2-135m" (presets), a local model folder, '
        "or a Hugging Face hub name.",
    )
    recipe: Recipe | None = Field(
        default=None,
        description="A published recipe: the hyperparameters this job does not set come from it. "
        "childtuning-paper: the ChildTuning paper's stated recipe, its run.sh (lr 4e-5, batch 16, 3 "
        "epochs, max length 128, warmup 0.1, weight decay 0.01, seed 42) with torch's AdamW, for every "
        "mode. childtuning-official: what the official code ran with that run.sh: warmup 0.1 for "
        "vanilla but 0 for childtuning-d, -f and update-dropout (its ChildTuning trainers ignored "
        "warmup_ratio), and optimizer adamw-hf2021 for every mode; the job's spec records the warmup "
        "it got. rdrop-paper: R-Drop's BERT-base GLUE settings "
        "(lr 1e-5, batch 8/16/32 by task, 10 epochs, warmup 0.06, the official alpha 1.0, which is "
        "rdrop_alpha = 2 * batch_size here).",
    )
    dataset: DatasetSpec
    childtuning: ChildTuningSpec = Field(default_factory=lambda: ChildTuningSpec())
    hyperparameters: Hyperparameters = Field(default_factory=lambda: Hyperparameters())
    resources: Resources = Field(default_factory=lambda: Resources())
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description=f"Free-form labels: at most {METADATA_MAX_ENTRIES} entries, keys of "
        f"1..{METADATA_MAX_KEY} characters, values of at most {METADATA_MAX_VALUE}.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=MAX_WEBHOOK_URL,
        description="Where to POST a signed JSON event when the job succeeds, fails or is cancelled: "
        "an http(s) URL without credentials, at a public address unless the operator allows "
        "internal networks (docs/service.md, Notifications).",
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_shape(cls, value: str | None) -> str | None:
        problem = url_problem(value) if value is not None else None
        if problem is not None:
            raise spec_error(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        """Fill the hyperparameters a job leaves out from its ``recipe`` (what it sets wins)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("recipe"), str):
            return data  # no recipe; or not a name, which the field's own check refuses
        if data["recipe"] not in RECIPES:
            return data
        hp = data.get("hyperparameters", {})
        if not isinstance(hp, Mapping):
            return data  # the field's own error says what is wrong
        values: dict[str, Any] = dict(RECIPES[data["recipe"]])
        if data["recipe"] == "childtuning-official":
            method = data.get("childtuning", {})
            mode = method.get("mode", ChildTuningSpec().mode) if isinstance(method, Mapping) else None
            if isinstance(mode, str) and mode in OFFICIAL_WARMUP:  # (an unknown mode: its own error)
                values["warmup_ratio"] = OFFICIAL_WARMUP[mode]
        if data["recipe"] == "rdrop-paper":
            dataset = data.get("dataset")
            preset = dataset.get("preset") if isinstance(dataset, Mapping) else None
            values["batch_size"] = RDROP_PAPER_BATCH.get(str(preset).lower(), 16)
            batch = hp.get("batch_size", values["batch_size"])
            if isinstance(batch, int) and not isinstance(batch, bool):
                values["rdrop_alpha"] = 2 * batch * RDROP_PAPER_ALPHA
        return {**data, "hyperparameters": {**values, **hp}}

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("spec_error", "{message}", {"message": "must not be blank"})
        return value.strip()

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > METADATA_MAX_ENTRIES:
            raise spec_error(f"at most {METADATA_MAX_ENTRIES} entries (got {len(value)})")
        for key, item in value.items():
            if not 1 <= len(key) <= METADATA_MAX_KEY:
                raise spec_error(f"keys must have 1..{METADATA_MAX_KEY} characters (got {len(key)})", key)
            if len(item) > METADATA_MAX_VALUE:
                raise spec_error(
                    f"values must have at most {METADATA_MAX_VALUE} characters (got {len(item)})", key
                )
        return value

    @model_validator(mode="after")
    def _rdrop_needs_labels(self) -> JobSpec:
        if self.hyperparameters.rdrop_alpha > 0 and self.dataset.effective_task_type == "causal-lm":
            raise spec_error(
                "R-Drop is for classification and regression here; set it to 0 for causal-lm",
                field="hyperparameters.rdrop_alpha",
            )
        return self

    @model_validator(mode="after")
    def _batch_divides(self) -> JobSpec:
        ranks = self.resources.num_ranks
        if self.hyperparameters.batch_size % ranks:
            raise spec_error(
                f"the global batch must be divisible by resources.num_ranks ({ranks}) "
                f"(got {self.hyperparameters.batch_size})",
                field="hyperparameters.batch_size",
            )
        return self
