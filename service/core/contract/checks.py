"""Checks of the machine a job meets: a boolean environment flag, and whether a model can be
loaded here (a preset, a local Hugging Face folder, or the hub where it is allowed).

The API checks these on submit and the training program again where the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from service.core import env
from service.core.contract.vocabulary import MODEL_PRESETS

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
        f"config.json (or set {env.ALLOW_HUB}=1 on the API and the workers where the hub can be reached)"
    )
