"""The ``dataset`` part of a job: a preset or uploaded files, their columns, task type and metric."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.core.contract.fields import Int, spec_error
from service.core.contract.vocabulary import (
    CAUSAL_LM_METRICS,
    MAX_EXAMPLES,
    MAX_LABELS,
    PRESET_METRICS,
    PRESET_TASK_TYPES,
    PRESETS,
    SEED_MAX,
    FileFormat,
    Metric,
    Overlong,
    Preset,
    TaskType,
)

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
        default=None,
        ge=1,
        le=MAX_EXAMPLES,
        description="Use only n training rows: the first n, or n drawn at random with subset_seed.",
    )
    subset_seed: Int | None = Field(
        default=None,
        ge=0,
        le=SEED_MAX,
        description="With max_train_examples: draw that many training rows at random with this seed "
        "(the same rows for every job giving the same seed, whatever its own seed; kept in file "
        "order) instead of taking the first n. A low-resource subset of a task.",
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
        if self.subset_seed is not None and self.max_train_examples is None:
            raise spec_error(
                "draws max_train_examples rows at random: give max_train_examples too (e.g. 1000)",
                field="subset_seed",
            )
        given = [name for name in _FILE_FIELDS if getattr(self, name) is not None]
        if self.effective_task_type != "causal-lm":
            self._refuse_given(
                _SFT_ONLY_FIELDS, f"is for causal-lm data (this dataset is {self.effective_task_type})"
            )
        if self.preset is not None:
            if given:
                raise spec_error(
                    f"give either a preset or files, not both (the preset fixes {', '.join(given)})",
                    field="preset",
                )
            return self
        if self.task_type == "causal-lm":
            return self._causal_lm_files()
        if not given:
            raise spec_error(
                "give either preset (one of "
                + ", ".join(PRESETS)
                + ") or files: "
                + ", ".join(_REQUIRED_FILE_FIELDS)
            )
        missing = [name for name in _REQUIRED_FILE_FIELDS if getattr(self, name) is None]
        if missing:
            raise spec_error(
                "required when no preset is given (missing: " + ", ".join(missing) + ")", field=missing[0]
            )
        if self.text_pair_column is not None and self.text_pair_column == self.text_column:
            raise spec_error("must differ from text_column", field="text_pair_column")
        if self.label_column in (self.text_column, self.text_pair_column):
            raise spec_error("must differ from the text columns", field="label_column")
        if self.task_type == "regression":
            if self.num_labels not in (None, 1):
                raise spec_error(f"must be 1 (or null) for regression (got {self.num_labels})", "num_labels")
            if self.metric not in (None, "pearson_spearman"):
                raise spec_error(
                    f"regression supports only pearson_spearman (got {self.metric!r})", field="metric"
                )
        else:
            if self.num_labels is not None and self.num_labels < 2:
                raise spec_error(
                    f"must be >= 2 for classification (got {self.num_labels})", field="num_labels"
                )
            if self.metric == "pearson_spearman" or self.metric in CAUSAL_LM_METRICS:
                owner = "regression" if self.metric == "pearson_spearman" else "causal-lm"
                raise spec_error(
                    f"{self.metric} is for {owner}; classification takes accuracy, f1 or mcc",
                    field="metric",
                )
            if self.metric == "f1" and self.num_labels not in (None, 2):
                raise spec_error(
                    f"f1 (of class 1) needs a binary task (num_labels is {self.num_labels})", field="metric"
                )
        return self

    def _refuse_given(self, names: tuple[str, ...], why: str) -> None:
        for name in names:
            if getattr(self, name) is not None:
                raise spec_error(f"{name} {why}; leave it out (docs/llm.md)", name)

    def _causal_lm_files(self) -> DatasetSpec:
        missing = [name for name in _REQUIRED_SFT_FIELDS if getattr(self, name) is None]
        if missing:
            raise spec_error(
                "required when no preset is given (missing: " + ", ".join(missing) + ")", field=missing[0]
            )
        self._refuse_given(
            _COLUMN_FIELDS, "is a column: causal-lm rows are prompt/completion or chat objects"
        )
        if self.metric is not None and self.metric not in CAUSAL_LM_METRICS:
            raise spec_error(
                f"causal-lm takes perplexity or exact_match (got {self.metric!r})", field="metric"
            )
        if self.file_format not in (None, "jsonl"):
            raise spec_error(
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
