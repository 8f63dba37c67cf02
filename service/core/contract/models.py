"""The job contract's pydantic models: :class:`JobSpec` and its parts (:class:`DatasetSpec`,
:class:`ChildTuningSpec`, :class:`Hyperparameters`, :class:`Resources`) with their validators.

The workers build the method's ``childtuning.ChildTuningConfig`` from
:meth:`ChildTuningSpec.config_kwargs`.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. A validator's own check raises a ``spec_error`` (:func:`_spec_error`), which
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

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.core.contract.urls import url_problem
from service.core.contract.vocabulary import (
    CAUSAL_LM_METRICS,
    MAX_EXAMPLES,
    MAX_LABELS,
    MAX_NEW_TOKENS,
    MAX_SAMPLES,
    MAX_STEPS,
    MAX_WEBHOOK_URL,
    METADATA_MAX_ENTRIES,
    METADATA_MAX_KEY,
    METADATA_MAX_VALUE,
    PRESET_METRICS,
    PRESET_TASK_TYPES,
    PRESETS,
    RDROP_PAPER_ALPHA,
    RDROP_PAPER_BATCH,
    RECIPES,
    SEED_MAX,
    ClipOrder,
    Device,
    FileFormat,
    Metric,
    Mode,
    Overlong,
    Precision,
    Preset,
    Recipe,
    TaskType,
)

# ---------------------------------------------------------------------------------------------
# Numbers: pydantic's lax mode takes True for 1; here a boolean is never a number.
# ---------------------------------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "must be a number, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _spec_error(message: str, field: str | None = None) -> PydanticCustomError:
    """An error raised by a model validator; ``field`` is appended to the error's location."""
    ctx: dict[str, Any] = {"message": message}
    if field is not None:
        ctx["field"] = field
    return PydanticCustomError("spec_error", "{message}", ctx)


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------


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
            raise _spec_error(
                f"must be a regular expression, or a list of 1 to 32 of them, each at most 200 "
                f"characters (got {_short(value)}); null takes the mode's default"
            )
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _spec_error(
                    f"{pattern!r} is not a regular expression ({exc}); escape special characters "
                    "with a backslash, or give a plain word found in the parameter names"
                ) from None
        return value

    @model_validator(mode="after")
    def _d_only_options(self) -> ChildTuningSpec:
        for name in ("strict_child", "audit_strict"):
            if getattr(self, name) and self.mode != "childtuning-d":
                raise _spec_error(
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


_FILE_FIELDS: tuple[str, ...] = (
    "train_file",
    "eval_file",
    "text_column",
    "text_pair_column",
    "label_column",
    "task_type",
    "num_labels",
    "metric",
    "file_format",
)
_REQUIRED_FILE_FIELDS: tuple[str, ...] = (
    "train_file",
    "eval_file",
    "text_column",
    "label_column",
    "task_type",
)
# causal-lm rows are prompt/completion or chat objects (docs/llm.md): no columns to name.
_REQUIRED_SFT_FIELDS: tuple[str, ...] = ("train_file", "eval_file", "task_type")
_COLUMN_FIELDS: tuple[str, ...] = ("text_column", "text_pair_column", "label_column", "num_labels")
_SFT_ONLY_FIELDS: tuple[str, ...] = ("overlong", "chat_template")


class DatasetSpec(BaseModel):
    """The data of a job: a preset, or a pair of user files (uploaded file ids or local paths).

    Give exactly one of ``preset`` or the file fields. Classification and regression:
    ``train_file``, ``eval_file``, ``text_column``, ``label_column``, ``task_type`` required;
    ``text_pair_column``, ``num_labels``, ``metric``, ``file_format`` optional. ``causal-lm``
    (supervised fine-tuning of a decoder, docs/llm.md): ``train_file``, ``eval_file`` and
    ``task_type`` only, jsonl rows of ``{"prompt", "completion"}`` or ``{"messages": [...]}``;
    ``overlong`` and ``chat_template`` optional.
    """

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"preset": "glue/rte"},
                {"preset": "glue/sst-2", "max_train_examples": 2000},
                {
                    "train_file": "file-3f2a9c",
                    "eval_file": "file-81b7d0",
                    "text_column": "question",
                    "text_pair_column": "answer",
                    "label_column": "label",
                    "task_type": "classification",
                    "metric": "f1",
                },
                {"train_file": "file-0c51aa", "eval_file": "file-9d02e7", "task_type": "causal-lm"},
                {"preset": "instruct/sst-2", "max_train_examples": 2000, "overlong": "drop"},
                {
                    "train_file": "/data/similarity/train.jsonl",
                    "eval_file": "/data/similarity/dev.jsonl",
                    "text_column": "a",
                    "text_pair_column": "b",
                    "label_column": "score",
                    "task_type": "regression",
                },
            ]
        },
    )

    preset: Preset | None = Field(default=None, description="One of " + ", ".join(PRESETS) + ".")
    train_file: str | None = Field(
        default=None, min_length=1, max_length=1000, description="File id or path."
    )
    eval_file: str | None = Field(default=None, min_length=1, max_length=1000, description="File id or path.")
    text_column: str | None = Field(default=None, min_length=1, max_length=200)
    text_pair_column: str | None = Field(default=None, min_length=1, max_length=200)
    label_column: str | None = Field(default=None, min_length=1, max_length=200)
    task_type: TaskType | None = None
    num_labels: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_LABELS,
        description="Classification: >= 2 (inferred from the training labels when null); regression: 1.",
    )
    metric: Metric | None = Field(
        default=None,
        description="Null = accuracy for classification, pearson_spearman for regression, perplexity for "
        "causal-lm (exact_match: the greedy answer must equal the completion; for short answers).",
    )
    file_format: FileFormat | None = Field(
        default=None, description="Null = by file extension, else by content (uploaded files have none)."
    )
    max_train_examples: Int | None = Field(
        default=None, ge=1, le=MAX_EXAMPLES, description="Use only the first n training rows."
    )
    max_eval_examples: Int | None = Field(
        default=None, ge=1, le=MAX_EXAMPLES, description="Use only the first n evaluation rows."
    )
    overlong: Overlong | None = Field(
        default=None,
        description="causal-lm: a row longer than hyperparameters.max_seq_length tokens is truncated "
        "(keep its first max_seq_length tokens; a row left without a completion token is dropped), "
        "dropped, or fails the job naming its line (fail). Null = truncate. Every truncated or dropped "
        "row is counted in the job's data event.",
    )
    chat_template: bool | None = Field(
        default=None,
        description="causal-lm: render prompt/completion rows with the tokenizer's chat template (a "
        "user turn, then an assistant turn); false = plain prompt + completion + end-of-sequence. "
        "Null = use the template when the tokenizer has one. Chat rows (messages) always need one.",
    )

    @field_validator("preset", mode="before")
    @classmethod
    def _preset_lower(cls, value: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get("strict"):  # the REST API: exactly as its schema says
            return value
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        given = [name for name in _FILE_FIELDS if getattr(self, name) is not None]
        if self.effective_task_type != "causal-lm":
            self._refuse_given(
                _SFT_ONLY_FIELDS, f"is for causal-lm data (this dataset is {self.effective_task_type})"
            )
        if self.preset is not None:
            if given:
                raise _spec_error(
                    f"give either a preset or files, not both (the preset fixes {', '.join(given)})",
                    field="preset",
                )
            return self
        if self.task_type == "causal-lm":
            return self._causal_lm_files()
        if not given:
            raise _spec_error(
                "give either preset (one of "
                + ", ".join(PRESETS)
                + ") or files: "
                + ", ".join(_REQUIRED_FILE_FIELDS)
            )
        missing = [name for name in _REQUIRED_FILE_FIELDS if getattr(self, name) is None]
        if missing:
            raise _spec_error(
                "required when no preset is given (missing: " + ", ".join(missing) + ")", field=missing[0]
            )
        if self.text_pair_column is not None and self.text_pair_column == self.text_column:
            raise _spec_error("must differ from text_column", field="text_pair_column")
        if self.label_column in (self.text_column, self.text_pair_column):
            raise _spec_error("must differ from the text columns", field="label_column")
        if self.task_type == "regression":
            if self.num_labels not in (None, 1):
                raise _spec_error(f"must be 1 (or null) for regression (got {self.num_labels})", "num_labels")
            if self.metric not in (None, "pearson_spearman"):
                raise _spec_error(
                    f"regression supports only pearson_spearman (got {self.metric!r})", field="metric"
                )
        else:
            if self.num_labels is not None and self.num_labels < 2:
                raise _spec_error(
                    f"must be >= 2 for classification (got {self.num_labels})", field="num_labels"
                )
            if self.metric == "pearson_spearman" or self.metric in CAUSAL_LM_METRICS:
                owner = "regression" if self.metric == "pearson_spearman" else "causal-lm"
                raise _spec_error(
                    f"{self.metric} is for {owner}; classification takes accuracy, f1 or mcc",
                    field="metric",
                )
            if self.metric == "f1" and self.num_labels not in (None, 2):
                raise _spec_error(
                    f"f1 (of class 1) needs a binary task (num_labels is {self.num_labels})", field="metric"
                )
        return self

    def _refuse_given(self, names: tuple[str, ...], why: str) -> None:
        for name in names:
            if getattr(self, name) is not None:
                raise _spec_error(f"{name} {why}; leave it out (docs/llm.md)", name)

    def _causal_lm_files(self) -> DatasetSpec:
        missing = [name for name in _REQUIRED_SFT_FIELDS if getattr(self, name) is None]
        if missing:
            raise _spec_error(
                "required when no preset is given (missing: " + ", ".join(missing) + ")", field=missing[0]
            )
        self._refuse_given(
            _COLUMN_FIELDS, "is a column: causal-lm rows are prompt/completion or chat objects"
        )
        if self.metric is not None and self.metric not in CAUSAL_LM_METRICS:
            raise _spec_error(
                f"causal-lm takes perplexity or exact_match (got {self.metric!r})", field="metric"
            )
        if self.file_format not in (None, "jsonl"):
            raise _spec_error(
                f"causal-lm rows are JSON objects: use jsonl (got {self.file_format!r})", field="file_format"
            )
        return self

    @property
    def effective_task_type(self) -> str:
        """classification, regression or causal-lm (the preset's, or the given ``task_type``)."""
        if self.preset is not None:
            return PRESET_TASK_TYPES[self.preset]
        return self.task_type or "classification"

    @property
    def effective_metric(self) -> str:
        """The metric family of this dataset (the preset's, the given one, or the task type's default)."""
        if self.preset is not None:
            return PRESET_METRICS[self.preset]
        if self.metric is not None:
            return self.metric
        if self.task_type == "causal-lm":
            return "perplexity"
        return "pearson_spearman" if self.task_type == "regression" else "accuracy"


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


class Resources(BaseModel):
    """Where and how the job runs. ``num_gpus`` is accepted as another name for ``num_ranks``."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"num_ranks": 1, "device": "cpu"},
                {"num_gpus": 4, "zero_stage": 2, "precision": "bf16", "device": "cuda"},
            ]
        },
    )

    num_ranks: Int = Field(
        default=1,
        ge=1,
        le=1024,
        validation_alias=AliasChoices("num_ranks", "num_gpus"),
        description="Training processes (one per GPU on cuda); also accepted as num_gpus.",
    )
    zero_stage: Int = Field(default=2, ge=0, le=3, description="DeepSpeed ZeRO stage, 0..3.")
    precision: Precision = "fp32"
    device: Device = Field(default="auto", description="auto = cuda when the worker has GPUs, else cpu.")

    @model_validator(mode="before")
    @classmethod
    def _one_count(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "num_ranks" in data and "num_gpus" in data:
            if data["num_ranks"] != data["num_gpus"]:
                raise _spec_error(
                    "num_ranks and num_gpus are the same setting; give one of them", field="num_gpus"
                )
            data = {k: v for k, v in data.items() if k != "num_gpus"}
        return data

    @property
    def num_gpus(self) -> int:
        """The same number as :attr:`num_ranks`."""
        return self.num_ranks


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
        "childtuning-paper: the official ChildTuning run.sh (lr 4e-5, batch 16, 3 epochs, max length "
        "128, warmup 0.1, weight decay 0.01, seed 42). rdrop-paper: R-Drop's BERT-base GLUE settings "
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
            raise _spec_error(problem)
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
            raise _spec_error(f"at most {METADATA_MAX_ENTRIES} entries (got {len(value)})")
        for key, item in value.items():
            if not 1 <= len(key) <= METADATA_MAX_KEY:
                raise _spec_error(f"keys must have 1..{METADATA_MAX_KEY} characters (got {len(key)})", key)
            if len(item) > METADATA_MAX_VALUE:
                raise _spec_error(
                    f"values must have at most {METADATA_MAX_VALUE} characters (got {len(item)})", key
                )
        return value

    @model_validator(mode="after")
    def _rdrop_needs_labels(self) -> JobSpec:
        if self.hyperparameters.rdrop_alpha > 0 and self.dataset.effective_task_type == "causal-lm":
            raise _spec_error(
                "R-Drop is for classification and regression here; set it to 0 for causal-lm",
                field="hyperparameters.rdrop_alpha",
            )
        return self

    @model_validator(mode="after")
    def _batch_divides(self) -> JobSpec:
        ranks = self.resources.num_ranks
        if self.hyperparameters.batch_size % ranks:
            raise _spec_error(
                f"the global batch must be divisible by resources.num_ranks ({ranks}) "
                f"(got {self.hyperparameters.batch_size})",
                field="hyperparameters.batch_size",
            )
        return self
