"""The study's names and files: a run's variant and setting, its file under ``docs/results/runs*/``,
the report's table it belongs to, and the spec set's parts (shared by the runner and the report)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from service.core.contract.vocabulary import OFFICIAL_WARMUP, RECIPES
from service.core.experiments import matches

ROOT = Path(__file__).resolve().parents[2]
SPEC_SET = ROOT / "docs" / "examples" / "glue-study.yaml"
LOW_RESOURCE = ROOT / "docs" / "examples" / "glue-study-1k.yaml"  # the report's second part
RESULTS = ROOT / "docs" / "results"
REPORT = ROOT / "docs" / "results.md"
SEED_AXIS = "hyperparameters.seed"
GPU_SUFFIX = "-gpu"
DEVICES = ("cpu", "cuda")


WARMUP_AXIS = "hyperparameters.warmup_ratio"


def recipe_warmup(recipe: str | None, mode: str) -> float:
    """The warmup a job of ``mode`` gets from its recipe when it sets none (0.1 without a recipe)."""
    if recipe == "childtuning-official":
        return OFFICIAL_WARMUP.get(mode, 0.1)
    return float(RECIPES.get(recipe or "", {}).get("warmup_ratio", 0.1))


def variant_of(values: dict[str, Any], recipe: str | None = None) -> str:
    """A run's name without its seed: the mode, ``+rdrop`` when R-Drop is on, ``+warmup0.1`` when
    its warmup is not what its recipe gives that mode (the study's warmup ablation)."""
    name = str(values.get("childtuning.mode", "vanilla"))
    if float(values.get("hyperparameters.rdrop_alpha") or 0) > 0:
        name += "+rdrop"
    if WARMUP_AXIS in values and float(values[WARMUP_AXIS]) != recipe_warmup(recipe, name):
        name += f"+warmup{float(values[WARMUP_AXIS]):g}"
    return name


def spec_variants(study: dict[str, Any]) -> list[str]:
    """The variant names a spec set's experiment makes (its axes less its excludes), in order."""
    experiment = study["experiment"]
    axes = {p: v for p, v in experiment["axes"].items() if p not in study.get("setting_axes", ())}
    names: list[str] = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        if any(matches(values, entry) for entry in experiment.get("exclude", [])):
            continue
        name = variant_of(values, experiment["base"].get("recipe"))
        if name not in names:
            names.append(name)
    return names


def num(value: Any) -> str:
    """``1e-4``, ``4e-5``, ``0.3``: an axis value as it reads in a name."""
    if isinstance(value, float) and value and abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-")
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_of(values: dict[str, Any], axes: Sequence[str]) -> str:
    """The regime a run belongs to, by the spec set's ``setting_axes``: ``lr 1e-4`` ('' if none)."""
    short = {"hyperparameters.learning_rate": "lr"}
    return ", ".join(f"{short.get(a, a.split('.')[-1])} {num(values[a])}" for a in axes if a in values)


def task_slug(task: str) -> str:
    return task.split("/")[-1].lower()


def folder_of(task: str, device: str = "cpu", setting: str = "", model: str = "") -> str:
    """A task's runs folder and its plots' name stem: ``cola`` on CPU, ``cola-gpu`` on a GPU,
    ``rte-lr1e-4`` for a setting (``lr 1e-4``), ``cola-lr1e-4-smollm2-135m`` for another model
    than the spec set's."""
    slug = task_slug(task) + (f"-{setting.replace(' ', '').replace(',', '-')}" if setting else "")
    slug += f"-{model.replace('/', '-')}" if model else ""
    return slug + ("" if device == "cpu" else GPU_SUFFIX)


def run_path(
    results: Path,
    task: str,
    variant: str,
    seed: int,
    device: str = "cpu",
    *,
    runs: str = "runs",
    setting: str = "",
    model: str = "",
) -> Path:
    """A run's file: ``<runs>/<task>/`` for CPU runs, ``<runs>/<task>-gpu/`` for GPU runs (their own
    rows); ``runs`` is the spec set's folder (``runs`` for the full-data study, ``runs-1k``)."""
    return results / runs / folder_of(task, device, setting, model) / f"{variant}__seed{seed}.json"


def group_of(run: dict[str, Any]) -> str:
    """The report's table a run belongs to: its task (``glue/rte-1k`` in a scoped study), its
    setting, and its scale when that is a GPU."""
    name = run["task"] + (f"-{run['scope']}" if run.get("scope") else "")
    name += f", {run['setting']}" if run.get("setting") else ""
    name += f" [{run['model_tag']}]" if run.get("model_tag") else ""
    return name if run.get("device", "cpu") == "cpu" else f"{name} (GPU)"


def load_runs(results: Path, runs: str = "runs") -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((results / runs).glob("*/*.json"))]


class StudyParts(NamedTuple):
    """What a spec set says about its run files: their folder, the axes that name a setting, the
    recipe (for variant names), its scope (``1k``) and the model tag of ``run --model`` ('' if none)."""

    runs: str = "runs"
    setting_axes: tuple[str, ...] = ()
    recipe: str | None = None
    scope: str = ""
    model_tag: str = ""

    def run_file(self, results: Path, task: str, values: dict[str, Any], device: str) -> Path:
        """The file of the run with these axis values."""
        return run_path(
            results, task, variant_of(values, self.recipe), int(values[SEED_AXIS]), device,
            runs=self.runs, setting=setting_of(values, self.setting_axes), model=self.model_tag,
        )  # fmt: skip


def study_parts(study: dict[str, Any] | None) -> StudyParts:
    """A spec set's parts (the defaults of the full-data study for None)."""
    if study is None:
        return StudyParts()
    return StudyParts(
        runs=str(study.get("runs", "runs")),
        setting_axes=tuple(study.get("setting_axes") or ()),
        recipe=study["experiment"]["base"].get("recipe"),
        scope=str(study.get("scope") or ""),
        model_tag=str(study.get("model_tag") or ""),
    )


def with_model(study: dict[str, Any], model: str | None) -> dict[str, Any]:
    """The spec set with another base model (``run --model``): its runs are their own rows and files,
    tagged with the model's name (``model_tag``)."""
    base = study["experiment"]["base"]
    if not model or model == base.get("model"):
        return study
    changed = json.loads(json.dumps(study))
    changed["experiment"]["base"]["model"] = model
    changed["model_tag"] = model
    return changed


def restrict_axes(study: dict[str, Any], only: dict[str, list[Any]]) -> dict[str, Any]:
    """The spec set with some axes narrowed to the given values (``run --only``); a value the
    axis does not have is an error naming it."""
    axes = study["experiment"]["axes"]
    for path, values in only.items():
        if path not in axes:
            raise ValueError(f"--only {path}: the spec set has no such axis (it has {', '.join(axes)})")
        missing = [v for v in values if v not in axes[path]]
        if missing:
            raise ValueError(f"--only {path}: {missing} not among its values {axes[path]}")
    narrowed = json.loads(json.dumps(study))
    narrowed["experiment"]["axes"] = {p: only.get(p, v) for p, v in axes.items()}
    return narrowed
