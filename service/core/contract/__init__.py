"""The job contract: what a fine-tune job is, defined once, for the API, the workers and the CLI.

A package of one module per concern; import the names from here (``service.core.contract``):

- ``vocabulary``: the names and enumerations (modes, presets and their metrics, task types,
  precisions, devices, statuses, phases, model presets) and the limits the models enforce.
- ``checks``: checks against this machine (:func:`env_flag`, :func:`model_problem`).
- ``models``: :class:`JobSpec`, the pydantic model of a job, made of its parts: ``dataset``
  (:class:`DatasetSpec`), ``method`` (:class:`ChildTuningSpec`), ``training``
  (:class:`Hyperparameters`, :class:`Resources`); ``fields`` holds what they share; ``urls`` the
  webhook URL's shape.
- ``messages``: :class:`SpecError` and :func:`format_validation_error`, which turns pydantic's
  errors into ``(field path, message)`` pairs that say how to fix each problem.
- ``loading``: :func:`load_spec`, reading a spec from a file, a JSON or YAML text, or a mapping.

The arrows: vocabulary <- checks; vocabulary <- fields, urls <- dataset, method, training <-
models <- messages <- loading. The package imports only pydantic, PyYAML, the standard library
and ``service.core.env``: the API process never imports torch.
"""

from __future__ import annotations

from service.core.contract.checks import env_flag, model_problem
from service.core.contract.dataset import DatasetSpec
from service.core.contract.loading import load_spec
from service.core.contract.messages import SpecError, format_validation_error
from service.core.contract.method import ChildTuningSpec
from service.core.contract.models import JobSpec
from service.core.contract.training import Hyperparameters, Resources
from service.core.contract.vocabulary import (
    DEVICES,
    METRICS,
    MODEL_PRESETS,
    MODES,
    OFFICIAL_WARMUP,
    OPTIMIZERS,
    OVERLONG,
    PHASES,
    PRECISIONS,
    PRESET_METRICS,
    PRESET_TASK_TYPES,
    PRESETS,
    RECIPES,
    STATUSES,
    TASK_TYPES,
    higher_is_better,
)

__all__ = [
    "DEVICES",
    "METRICS",
    "MODEL_PRESETS",
    "MODES",
    "OFFICIAL_WARMUP",
    "OPTIMIZERS",
    "OVERLONG",
    "PHASES",
    "PRECISIONS",
    "PRESETS",
    "PRESET_METRICS",
    "PRESET_TASK_TYPES",
    "RECIPES",
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
    "higher_is_better",
    "load_spec",
    "model_problem",
]
