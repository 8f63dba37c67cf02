"""Resolving a valid job spec into one the workers can read: the model and the dataset files.

``POST /v1/jobs`` checks what the contract cannot, and it is also the tenant boundary: a job may
name only what its tenant owns or the operator offers (``docs/reliability.md``):

- ``model``: a preset (``minilm-l6``); a model folder under one of the operator's model roots
  (``CHILDTUNE_MODEL_ROOTS``), by its name relative to the root or by its path; one of the
  tenant's own succeeded jobs, by id (``job-<id>`` or ``job-<id>/model`` for its final model,
  ``job-<id>/best`` for its best); or a hub name where the hub is allowed. Any other path is
  refused with one message, whether or not it exists, so the answer reveals nothing of the
  server's file system.
- ``dataset.train_file`` / ``eval_file``: the tenant's uploaded file ids, never a path, in
  every mode (``childtune train`` on one's own machine still takes paths).

File ids and model names are then replaced by absolute paths in the spec the worker writes into
``job.json``; the caller's spec is kept as given. :func:`resolved_problem` checks a stored spec
again before a worker runs it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from service.core.contract import MODEL_PRESETS, JobSpec, SpecError
from service.core.records import FileRecord, valid_file_id, valid_job_id
from service.core.settings import ALL_QUEUES, MAX_RANKS_PER_QUEUE, Settings, queue_for
from service.core.store import Store
from service.core.webhooks.guard import check_url

__all__ = ["model_choices", "resolve_model", "resolve_spec", "resolved_problem"]

# A hub id: "name" or "org/name" of letters, digits, '-', '_' and '.', not starting with '.'.
_HUB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,95})?$")
_JOB_MODEL = re.compile(r"^(job-[0-9a-f]{16})(?:/(model|best))?$")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def model_choices(settings: Settings) -> list[str]:
    """What a tenant may give as ``model`` besides its own jobs: presets and the roots' folders."""
    names = list(MODEL_PRESETS)
    for root in settings.model_root_list:
        if root.is_dir():
            names += sorted(
                p.name for p in root.iterdir() if _is_model_folder(p) and _inside(p.resolve(), root)
            )
    return names


def _refusal(model: str, settings: Settings) -> str:
    offered = ", ".join(repr(m) for m in model_choices(settings)[:20])
    hub = " or a Hugging Face hub name" if settings.allow_hub else ""
    return (
        f"{model[:200]!r} is not a model this service offers you: give one of {offered}, "
        f"one of your succeeded jobs by id (job-<id>, job-<id>/best){hub}"
    )


def resolve_model(model: str, tenant: str, store: Store, settings: Settings) -> tuple[str | None, str | None]:
    """``(what the worker loads, None)`` or ``(None, why not)`` for a tenant's ``model``."""
    if model in MODEL_PRESETS:
        return model, None
    job_ref = _JOB_MODEL.match(model)
    if job_ref:
        job_id, which = job_ref.group(1), job_ref.group(2) or "model"
        record = store.get_job(job_id, tenant) if valid_job_id(job_id) else None
        folder = settings.jobs_dir / job_id / which
        if record is None or record.status != "succeeded" or not _is_model_folder(folder):
            return None, (
                f"{model!r}: no succeeded job {job_id} of yours with a {which}/ folder "
                "(GET /v1/jobs?status=succeeded lists them)"
            )
        return str(folder.resolve()), None
    if "\x00" not in model:
        for root in settings.model_root_list:
            candidate = Path(model) if Path(model).is_absolute() else root / model
            try:
                real = candidate.resolve()
            except (OSError, RuntimeError):
                continue
            if _inside(real, root) and real != root and _is_model_folder(real):
                return str(real), None
    looks_like_path = model.startswith(("/", ".", "~")) or ".." in model or "\\" in model
    if settings.allow_hub and not looks_like_path and _HUB_NAME.match(model):
        return model, None
    return None, _refusal(model, settings)


def resolve_spec(spec: JobSpec, tenant: str, store: Store, settings: Settings) -> JobSpec:
    """The spec with dataset file ids replaced by paths; raises SpecError naming every bad field."""
    model, problem = resolve_model(spec.model, tenant, store, settings)
    errors = [("model", problem)] if problem else []
    resources = spec.resources
    if queue_for(resources.device, resources.ranks_per_node) not in ALL_QUEUES:
        errors.append(
            (
                "resources.num_ranks",
                f"at most {MAX_RANKS_PER_QUEUE} ranks per machine on this service (no worker serves "
                f"{resources.ranks_per_node}); a larger job spans machines: give resources.nodes so that "
                f"num_ranks / nodes <= {MAX_RANKS_PER_QUEUE} (docs/deploy.md, jobs larger than one machine)",
            )
        )
    if spec.webhook_url is not None:
        webhook_problem = check_url(spec.webhook_url, settings)
        if webhook_problem is not None:
            errors.append(("webhook_url", webhook_problem))
    data = spec.dataset
    updates: dict[str, object] = {}
    if data.preset is None:
        records: dict[str, FileRecord] = {}
        for field in ("train_file", "eval_file"):
            ref = getattr(data, field)
            assert ref is not None  # the contract requires both without a preset
            if valid_file_id(ref):
                record = store.get_file(ref, tenant)
                if record is None:
                    errors.append(
                        (
                            f"dataset.{field}",
                            f"no uploaded file {ref!r} for this API key (upload: POST /v1/files)",
                        )
                    )
                    continue
                records[field] = record
                updates[field] = str(settings.files_dir / record.id)
            else:  # a path, in every mode: the service reads only what the tenant uploaded
                errors.append(
                    (
                        f"dataset.{field}",
                        f"{ref[:200]!r} is not a file id; upload the file (POST /v1/files) and give "
                        "its id (file-...)",
                    )
                )
        for field, record in records.items():
            if data.task_type == "causal-lm" and record.layout == "table":
                which = "training" if field == "train_file" else "evaluation"
                errors.append(
                    (
                        f"dataset.{field}",
                        f"the {which} file {record.id} holds table rows (columns "
                        f"{', '.join(record.columns[:10])}); causal-lm needs jsonl rows of "
                        '{"prompt", "completion"} or {"messages": [...]} (docs/llm.md)',
                    )
                )
        for column_field in ("text_column", "text_pair_column", "label_column"):
            column = getattr(data, column_field)
            if column is None:
                continue
            for field, record in records.items():
                if column not in record.columns:
                    which = "training" if field == "train_file" else "evaluation"
                    errors.append(
                        (
                            f"dataset.{column_field}",
                            f"column {column!r} is not in the {which} file {record.id} "
                            f"(its columns: {', '.join(record.columns)})",
                        )
                    )
                    break
        formats = {r.format for r in records.values()}
        if data.file_format is None and len(formats) == 1 and len(records) == 2:
            updates["file_format"] = formats.pop()
    if errors:
        raise SpecError(errors)
    return spec.model_copy(update={"model": model, "dataset": data.model_copy(update=updates)})


def resolved_problem(resolved: dict[str, Any], tenant: str, store: Store, settings: Settings) -> str | None:
    """Why a stored, resolved spec reads something its tenant may not (None when it does not).

    The worker checks this before it runs a job, so a record written by an older API, or by
    hand, cannot make it read outside the tenant's files, the model roots and its own jobs.
    """
    model = str(resolved.get("model", ""))
    if model not in MODEL_PRESETS:
        path = Path(model)
        if path.is_absolute():
            real = path.resolve()
            jobs = settings.jobs_dir.resolve()
            owner_job = real.relative_to(jobs).parts[0] if _inside(real, jobs) and real != jobs else None
            own = owner_job is not None and store.get_job(owner_job, tenant) is not None
            if not (own or any(_inside(real, root) for root in settings.model_root_list)):
                return "model: the job names a folder outside the model roots and its tenant's own jobs"
        elif not (settings.allow_hub and _HUB_NAME.match(model)):
            return "model: the job names a model that is neither a preset nor an allowed hub name"
    data = resolved.get("dataset") or {}
    files = settings.files_dir.resolve()
    for field in ("train_file", "eval_file"):
        value = data.get(field)
        if value is None:
            continue
        real = Path(str(value)).resolve()
        if real.parent != files or store.get_file(real.name, tenant) is None:
            return f"dataset.{field}: the job names a file that is not one of its tenant's uploads"
    return None
