"""The job contract's vocabulary: the names other code imports rather than spelling them.

The enumerations, each a ``Literal`` type for the models and (but for file formats) a tuple of
its values: modes, dataset presets and their metric families, task types, metrics, precisions,
devices, file formats, job statuses (and the final ones) and phases; the model presets; the
numeric limits the models enforce. Imports only the standard library.
"""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["vanilla", "childtuning-d", "childtuning-f", "update-dropout"]
MODES: tuple[str, ...] = get_args(Mode)

# Where a gradient mask acts relative to DeepSpeed's gradient clipping (ChildTuningConfig.clip_order).
ClipOrder = Literal["clip-then-mask", "mask-then-clip"]
CLIP_ORDERS: tuple[str, ...] = get_args(ClipOrder)

# The GLUE tasks, and instruct/sst-2: SST-2 as instruction data for a causal LM ("Review: ...
# Sentiment (positive or negative)?" -> "positive" / "negative"), scored by exact match.
Preset = Literal["glue/rte", "glue/mrpc", "glue/cola", "glue/sts-b", "glue/sst-2", "instruct/sst-2"]
PRESETS: tuple[str, ...] = get_args(Preset)

# causal-lm: supervised fine-tuning of a decoder on prompt/completion or chat rows (docs/llm.md).
TaskType = Literal["classification", "regression", "causal-lm"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)

# What a causal-lm job does with a row longer than hyperparameters.max_seq_length tokens:
# truncate (keep the first max_seq_length tokens; a row left with no completion token is
# dropped), drop (leave the row out) or fail (the job fails naming the row's line).
Overlong = Literal["truncate", "drop", "fail"]
OVERLONG: tuple[str, ...] = get_args(Overlong)

# Metric families (computed by ``workers.train.glue_metrics``):
#   accuracy          accuracy
#   f1                F1 of class 1 and accuracy (binary classification only), as MRPC
#   mcc               Matthews correlation (multi-class form) and accuracy, as CoLA
#   pearson_spearman  Pearson and Spearman correlation (regression), as STS-B
#   perplexity        causal-lm: exp(mean loss over completion tokens), token accuracy
#   exact_match       causal-lm: the greedy answer equals the completion, plus perplexity
Metric = Literal["accuracy", "f1", "mcc", "pearson_spearman", "perplexity", "exact_match"]
METRICS: tuple[str, ...] = get_args(Metric)
CAUSAL_LM_METRICS: tuple[str, ...] = ("perplexity", "exact_match")

# Metric keys where lower is better (losses and perplexity); every other score is better higher.
LOWER_IS_BETTER_KEYS: tuple[str, ...] = ("perplexity",)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (``mcc``, ``eval_loss``, ...) is better."""
    key = metric.lower().removeprefix("eval_")
    lower = key.endswith("loss") or key in LOWER_IS_BETTER_KEYS or key in ("mse", "mae", "rmse")
    return not (lower or key.endswith(("_mse", "_mae", "_rmse")))


PRESET_METRICS: dict[str, str] = {
    "glue/rte": "accuracy",
    "glue/mrpc": "f1",
    "glue/cola": "mcc",
    "glue/sts-b": "pearson_spearman",
    "glue/sst-2": "accuracy",
    "instruct/sst-2": "exact_match",
}

PRESET_TASK_TYPES: dict[str, str] = {
    "glue/rte": "classification",
    "glue/mrpc": "classification",
    "glue/cola": "classification",
    "glue/sts-b": "regression",
    "glue/sst-2": "classification",
    "instruct/sst-2": "causal-lm",
}

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

Device = Literal["cpu", "cuda", "auto"]
DEVICES: tuple[str, ...] = get_args(Device)

FileFormat = Literal["csv", "tsv", "jsonl"]

# Models the workers know by a short name (resolved to a local folder by the worker).
MODEL_PRESETS: tuple[str, ...] = ("minilm-l6", "smollm2-135m")

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)
# The statuses a job never leaves (an experiment's too, once every job of it has one).
FinalStatus = Literal["succeeded", "failed", "cancelled"]
FINAL_STATUSES: tuple[str, ...] = get_args(FinalStatus)

Phase = Literal["preparing", "fisher", "training", "evaluating", "saving"]
PHASES: tuple[str, ...] = get_args(Phase)

# Published recipes a job can name (``recipe``): hyperparameters it does not set come from here.
# childtuning-paper: the recipe the ChildTuning paper states and its run.sh passes (alibaba/
#   AliceMind, ChildTuning/): 10% warmup and torch's AdamW rule for every mode.
# childtuning-official: what the official code actually ran with that run.sh. Its ChildTuning-D
#   and -F trainers override create_optimizer_and_scheduler and build the scheduler from
#   warmup_steps (default 0; run.sh passes only --warmup_ratio), so they had no warmup while
#   vanilla (the stock Trainer) had 10%; and every optimizer followed the 2021 Hugging Face AdamW
#   rule (adamw-hf2021: eps before the bias correction, the decay after the update). Warmup per
#   mode: OFFICIAL_WARMUP (update-dropout has no official counterpart; it is ChildTuning's
#   optimizer family, so it gets D's and F's 0).
# rdrop-paper: R-Drop's BERT-base GLUE settings (dropreg/R-Drop, huggingface_transformer README):
#   lr 1e-5, batch 8 (RTE), 16 (MRPC, CoLA, STS-B) or 32 (SST-2), updates for 10 epochs, warmup
#   about 6% of them; alpha 1.0 in the official code's convention (the top of the paper's GLUE
#   search set {0.1, 0.5, 1.0}), which is rdrop_alpha = 2 * batch_size * 1.0 here (the official
#   code sums the KL over the batch and halves the two cross-entropies: docs/method.md).
Recipe = Literal["childtuning-paper", "childtuning-official", "rdrop-paper"]
# The optimizer's update rule: torch's AdamW, or the 2021 Hugging Face one (childtuning.hf2021).
Optimizer = Literal["adamw", "adamw-hf2021"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
_RUN_SH: dict[str, float | int | str] = {
    "learning_rate": 4e-5,
    "batch_size": 16,
    "epochs": 3,
    "max_seq_length": 128,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "seed": 42,
}
RECIPES: dict[str, dict[str, float | int | str]] = {
    "childtuning-paper": dict(_RUN_SH),
    "childtuning-official": {**_RUN_SH, "optimizer": "adamw-hf2021"},
    "rdrop-paper": {
        "learning_rate": 1e-5,
        "batch_size": 16,
        "epochs": 10,
        "max_seq_length": 128,
        "warmup_ratio": 0.06,
        "weight_decay": 0.01,
        "seed": 42,
    },
}
OFFICIAL_WARMUP: dict[str, float] = {
    "vanilla": 0.1,
    "childtuning-d": 0.0,
    "childtuning-f": 0.0,
    "update-dropout": 0.0,
}
RDROP_PAPER_ALPHA = 1.0  # in the official code's convention; rdrop_alpha = 2 * batch_size * this
RDROP_PAPER_BATCH: dict[str, int] = {"glue/rte": 8, "glue/sst-2": 32}  # others: 16

# ChildTuningConfig requires 0 <= seed < 2**63; the job's seed has the same range.
SEED_MAX = 2**63 - 1

# Upper bounds on the work one job may ask for (each refused with a 422 naming the field).
MAX_STEPS = 1_000_000
MAX_LABELS = 10_000
MAX_EXAMPLES = 100_000_000
MAX_NEW_TOKENS = 1024
MAX_SAMPLES = 16
MAX_NODES = 64  # machines one job may span (resources.nodes)

# A webhook URL's longest form (``service.core.contract.urls``).
MAX_WEBHOOK_URL = 2000

METADATA_MAX_ENTRIES = 32
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 1024
