"""The job contract's vocabulary: the names other code imports rather than spelling them.

The enumerations, each a ``Literal`` type for the models and (but for file formats) a tuple of
its values: modes, dataset presets and their metric families, task types, metrics, precisions,
devices, file formats, job statuses and phases; the model presets and the hub switch's variable
name; the numeric limits the models enforce. Imports only the standard library and
``service.core.env``.
"""

from __future__ import annotations

from typing import Literal, get_args

from service.core import env

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
