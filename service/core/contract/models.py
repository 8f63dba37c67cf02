"""The job contract: what a fine-tune job is, defined once, for the API, the workers and the CLI.

This module imports only pydantic, PyYAML and the standard library: the API process never
imports torch. The workers read a job's ``job.json`` through :func:`load_spec` and build the
method's ``childtuning.ChildTuningConfig`` from :meth:`ChildTuningSpec.config_kwargs`.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. Validation failures are raised as :class:`SpecError`, which carries *every* problem
found, each as a ``(field path, message)`` pair, e.g.
``childtuning.reserve_p: must be > 0 and <= 1 (got 1.5)``.

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

import difflib
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from service.core import env

__all__ = [
    "ALLOW_HUB_ENV",
    "DEVICES",
    "METRICS",
    "MODEL_PRESETS",
    "MODES",
    "PHASES",
    "PRECISIONS",
    "PRESETS",
    "PRESET_METRICS",
    "STATUSES",
    "TASK_TYPES",
    "ChildTuningSpec",
    "DatasetSpec",
    "Hyperparameters",
    "JobSpec",
    "Resources",
    "SpecError",
    "env_flag",
    "format_validation_error",
    "load_spec",
    "model_problem",
]

# ---------------------------------------------------------------------------------------------
# Shared names. Other code (API, workers, CLI, tests) imports these rather than spelling them.
# ---------------------------------------------------------------------------------------------

Mode = Literal["vanilla", "childtuning-d", "childtuning-f", "update-dropout"]
MODES: tuple[str, ...] = get_args(Mode)

Preset = Literal["glue/rte", "glue/mrpc", "glue/cola", "glue/sts-b", "glue/sst-2"]
PRESETS: tuple[str, ...] = get_args(Preset)

TaskType = Literal["classification", "regression"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)

# Metric families (computed by ``workers.train.glue_metrics``):
#   accuracy          accuracy
#   f1                F1 of class 1 and accuracy (binary classification only), as MRPC
#   mcc               Matthews correlation (multi-class form) and accuracy, as CoLA
#   pearson_spearman  Pearson and Spearman correlation (regression), as STS-B
Metric = Literal["accuracy", "f1", "mcc", "pearson_spearman"]
METRICS: tuple[str, ...] = get_args(Metric)

PRESET_METRICS: dict[str, str] = {
    "glue/rte": "accuracy",
    "glue/mrpc": "f1",
    "glue/cola": "mcc",
    "glue/sts-b": "pearson_spearman",
    "glue/sst-2": "accuracy",
}

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

Device = Literal["cpu", "cuda", "auto"]
DEVICES: tuple[str, ...] = get_args(Device)

FileFormat = Literal["csv", "tsv", "jsonl"]

# Models the workers know by a short name (resolved to a local folder by the worker).
MODEL_PRESETS: tuple[str, ...] = ("minilm-l6",)
ALLOW_HUB_ENV = env.ALLOW_HUB
# The words pydantic-settings reads as true, so the API and the workers agree on a flag's value.
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """A boolean environment variable read as the service's settings read it."""
    return environ.get(name, "").strip().lower() in TRUE_WORDS


def model_problem(model: str, *, allow_hub: bool) -> str | None:
    """Why ``model`` cannot be loaded on this machine, or None: a preset, a local Hugging Face folder
    (one holding ``config.json``), or a hub name where the hub is allowed. The API checks it on
    submit and the training program again where the job runs."""
    if model in MODEL_PRESETS:
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        return f"the folder {model} has no config.json (a Hugging Face model folder is needed)"
    if model.startswith(("/", ".", "~")) or path.exists():
        return f"no model folder {model} here (give a folder that holds config.json)"
    if allow_hub:
        return None
    presets = ", ".join(repr(m) for m in MODEL_PRESETS)
    return (
        f"{model!r}: no Hugging Face hub access here; use {presets} or a local model folder with "
        f"config.json (or set {ALLOW_HUB_ENV}=1 on the API and the workers where the hub can be reached)"
    )


Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)

Phase = Literal["preparing", "fisher", "training", "evaluating", "saving"]
PHASES: tuple[str, ...] = get_args(Phase)

# ChildTuningConfig requires 0 <= seed < 2**63; the job's seed has the same range.
SEED_MAX = 2**63 - 1

# Upper bounds on the work one job may ask for (each refused with a 422 naming the field).
MAX_STEPS = 1_000_000
MAX_LABELS = 10_000
MAX_EXAMPLES = 100_000_000

METADATA_MAX_ENTRIES = 32
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 1024


# ---------------------------------------------------------------------------------------------
# Numbers: pydantic's lax mode takes True for 1; here a boolean is never a number.
# ---------------------------------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "must be a number, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


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
    param_filter: str | None = Field(
        default=None,
        max_length=200,
        description='Substring a parameter name must contain to be masked; null = mode default ("layer" '
        'for childtuning-d, every parameter otherwise); "" matches every parameter.',
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


class DatasetSpec(BaseModel):
    """The data of a job: a GLUE preset, or a pair of user files (uploaded file ids or local paths).

    Give exactly one of ``preset`` or the file fields (``train_file``, ``eval_file``,
    ``text_column``, ``label_column``, ``task_type`` required; ``text_pair_column``,
    ``num_labels``, ``metric``, ``file_format`` optional).
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
        default=None, description="Null = accuracy for classification, pearson_spearman for regression."
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

    @field_validator("preset", mode="before")
    @classmethod
    def _preset_lower(cls, value: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get("strict"):  # the REST API: exactly as its schema says
            return value
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        given = [name for name in _FILE_FIELDS if getattr(self, name) is not None]
        if self.preset is not None:
            if given:
                raise _spec_error(
                    f"give either a preset or files, not both (the preset fixes {', '.join(given)})",
                    field="preset",
                )
            return self
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
            if self.metric == "pearson_spearman":
                raise _spec_error(
                    "pearson_spearman is for regression; classification takes accuracy, f1 or mcc",
                    field="metric",
                )
            if self.metric == "f1" and self.num_labels not in (None, 2):
                raise _spec_error(
                    f"f1 (of class 1) needs a binary task (num_labels is {self.num_labels})", field="metric"
                )
        return self

    @property
    def effective_metric(self) -> str:
        """The metric family of this dataset (the preset's, the given one, or the task type's default)."""
        if self.preset is not None:
            return PRESET_METRICS[self.preset]
        if self.metric is not None:
            return self.metric
        return "pearson_spearman" if self.task_type == "regression" else "accuracy"


class Hyperparameters(BaseModel):
    """Optimisation settings (defaults: the ChildTuning paper's)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"epochs": 3, "batch_size": 16, "learning_rate": 2e-5, "seed": 42},
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
    learning_rate: Float = Field(default=2e-5, gt=0, le=1)
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
    save_every: Int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Optimizer steps; null = every epoch end."
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
                    "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 2e-5, "seed": 42},
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
        description='"minilm-l6" (preset), a local model folder, or a Hugging Face hub name.',
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
    def _batch_divides(self) -> JobSpec:
        ranks = self.resources.num_ranks
        if self.hyperparameters.batch_size % ranks:
            raise _spec_error(
                f"the global batch must be divisible by resources.num_ranks ({ranks}) "
                f"(got {self.hyperparameters.batch_size})",
                field="hyperparameters.batch_size",
            )
        return self


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class SpecError(ValueError):
    """A job spec that cannot be accepted; ``errors`` lists every problem as (field path, message).

    The field path is dotted (``childtuning.reserve_p``); ``""`` means the spec as a whole.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors) or [("", "invalid job spec")]
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"{path}: {message}" if path else message for path, message in self.errors]
        if len(lines) == 1:
            return lines[0]
        return f"{len(lines)} problems in the job spec:\n" + "\n".join("  " + line for line in lines)

    def __reduce__(self) -> tuple[type[SpecError], tuple[list[tuple[str, str]]]]:
        return (type(self), (self.errors,))

    @property
    def fields(self) -> list[str]:
        """The field paths, in order (for the API's ``error.field``)."""
        return [path for path, _ in self.errors]

    @property
    def field(self) -> str:
        """The first problem's field path (``""`` for the spec as a whole)."""
        return self.errors[0][0]


def _show(value: Any) -> str:
    """A short rendering of a user's input for an error message."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, Mapping):
        text = "an object"
    elif isinstance(value, list | tuple):
        text = "a list"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of an annotation (``X | None`` -> [X], ``Annotated[X, ...]`` -> [X])."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in get_args(annotation):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``X | None`` included), if any."""
    return next((t for t in _unwrap(annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _lookup(model: type[BaseModel], key: str) -> FieldInfo | None:
    """A model's field by name or by one of its validation aliases."""
    for name, info in model.model_fields.items():
        aliases = {name}
        va = info.validation_alias
        if isinstance(va, AliasChoices):
            aliases.update(c for c in va.choices if isinstance(c, str))
        elif isinstance(va, str):
            aliases.add(va)
        if key in aliases:
            return info
    return None


def _resolve(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Follow an error location through the models from :class:`JobSpec`.

    Returns the model that holds the location's last key and that key's field (``None`` where
    the path leaves the models, e.g. inside ``metadata``). An empty location is the job itself.
    """
    model: type[BaseModel] | None = JobSpec
    info: FieldInfo | None = None
    for index, part in enumerate(loc):
        if model is None or not isinstance(part, str):
            return None, None
        info = _lookup(model, part)
        if info is None:
            return model, None
        if index == len(loc) - 1:
            return model, info
        model = _model_in(info.annotation)
    return model, info


def _bounds_text(info: FieldInfo | None) -> str | None:
    """``> 0 and <= 1`` from a field's numeric constraints."""
    if info is None:
        return None
    parts: list[str] = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            parts.append(f">= {item.ge}")
    for item in info.metadata:
        if isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            parts.append("<= 2**63 - 1" if item.le == SEED_MAX else f"<= {item.le}")
    return " and ".join(parts) or None


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        keys.append(name)
        va = info.validation_alias
        if isinstance(va, AliasChoices):
            keys.extend(c for c in va.choices if isinstance(c, str) and c != name)
    return keys


_BOUND_KINDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "dict": "an object",
    "model": "an object",
}


def _message(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind: str = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    given = err.get("input")
    got = f" (got {_show(given)})"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        holder, _ = _resolve(loc)
        if holder is None:
            return "unknown field"
        allowed = _allowed_keys(holder)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return "unknown field; allowed: " + ", ".join(allowed) + hint
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        _, info = _resolve(loc)
        choices: list[str] = []
        if info is not None:
            for t in _unwrap(info.annotation):
                if get_origin(t) is Literal:
                    choices.extend(str(a) for a in get_args(t))
        allowed_text = ", ".join(choices) if choices else str(expected)
        return f"must be one of {allowed_text}{got}"
    if kind in _BOUND_KINDS:
        _, info = _resolve(loc)
        bounds = _bounds_text(info)
        if bounds is None:
            op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
            key = {
                "greater_than": "gt",
                "greater_than_equal": "ge",
                "less_than": "lt",
                "less_than_equal": "le",
            }
            bounds = f"{op[kind]} {ctx.get(key[kind])}"
        return f"must be {bounds}{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in ("string_too_short", "string_too_long"):
        low, high = ctx.get("min_length"), ctx.get("max_length")
        if kind == "string_too_short":
            return "must not be empty" if low == 1 else f"must have at least {low} characters"
        return f"must have at most {high} characters (got {len(given) if isinstance(given, str) else '?'})"
    if kind == "int_from_float":
        return f"must be a whole number{got}"
    for prefix, word in _TYPE_WORDS.items():
        if kind.startswith(prefix + "_") and (kind.endswith("_type") or kind.endswith("_parsing")):
            return f"must be {word}{got}"
    if kind == "number_not_bool":
        return f"must be a number, not a boolean{got}"
    if kind == "spec_error":
        return str(ctx.get("message", err.get("msg", "")))
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg + got


def format_validation_error(exc: ValidationError) -> SpecError:
    """Turn pydantic's ValidationError into a :class:`SpecError` listing every problem."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        message = _message(err, loc)
        ctx = err.get("ctx") or {}
        path_parts = [str(p) for p in loc]
        if err["type"] == "spec_error" and ctx.get("field"):
            path_parts.extend(str(ctx["field"]).split("."))
            # A model-level check on JobSpec names a nested field by its full path already.
        out.append((".".join(path_parts), message))
    return SpecError(out)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _parse_text(text: str, fmt: str | None) -> Any:
    """Parse a spec's text as JSON or YAML (``fmt`` None: JSON when it starts with ``{``, else YAML)."""
    looks_json = text.lstrip().startswith(("{", "["))
    if fmt == "json" or (fmt is None and looks_json):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            json_error = SpecError([("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")])
            if fmt == "json":
                raise json_error from exc
        # Not JSON after all: flow-style YAML also starts with "{".
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise json_error from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([("", f"invalid YAML{where}: {problem}")]) from exc


def load_spec(source: str | Path | Mapping[str, Any], *, strict: bool = False) -> JobSpec:
    """Read and validate a job spec from a file path, a JSON or YAML text, or a mapping.

    A :class:`~pathlib.Path`, or a one-line string naming an existing file, is read as a file:
    JSON for ``.json``, YAML for ``.yaml``/``.yml``, else by content. Any other string is the
    spec's text (JSON when it starts with ``{``, else YAML). Raises :class:`SpecError` listing
    every problem.

    ``strict`` takes every value as the JSON type its schema says (no ``"3"`` for 3, no ``0``
    for false): the REST API's mode, so it accepts exactly what its OpenAPI schema describes.
    Files stay lax: YAML reads ``2e-5`` as a string.
    """
    fmt: str | None = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path: Path | None = None
        if isinstance(source, Path):
            path = source
        elif "\n" not in source and len(source) < 4096 and source.strip():
            candidate = Path(source.strip()).expanduser()
            try:
                if candidate.is_file():
                    path = candidate
            except OSError:
                path = None
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError([("", f"cannot read {path}: {exc}")]) from exc
            suffix = path.suffix.lower()
            fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
        else:
            text = str(source)
        if not text.strip():
            raise SpecError([("", "the job spec is empty")])
        data = _parse_text(text, fmt)
    if not isinstance(data, Mapping):
        raise SpecError([("", f"the job spec must be an object (a mapping), not {type(data).__name__}")])
    try:
        return JobSpec.model_validate(data, strict=strict, context={"strict": strict})
    except ValidationError as exc:
        raise format_validation_error(exc) from exc
