"""Resolving a valid job spec into one the workers can read: the model and the dataset files.

``POST /v1/jobs`` checks what the contract cannot: that the model is one the workers can load
(the ``minilm-l6`` preset, a local folder holding ``config.json``, or a hub name when hub access
is allowed) and that uploaded file ids belong to the caller and have the columns the spec names.
File ids are then replaced by the files' paths in the artifact store (the spec the worker writes
into ``job.json``); the caller's spec is kept as given.
"""

from __future__ import annotations

from pathlib import Path

from service.contract import JobSpec, SpecError, model_problem
from service.settings import ALL_QUEUES, MAX_RANKS_PER_QUEUE, Settings, queue_for
from service.store import FileRecord, Store, valid_file_id

__all__ = ["resolve_spec"]


def resolve_spec(spec: JobSpec, tenant: str, store: Store, settings: Settings) -> JobSpec:
    """The spec with dataset file ids replaced by paths; raises SpecError naming every bad field."""
    problem = model_problem(spec.model, allow_hub=settings.allow_hub)
    errors = [("model", problem)] if problem else []
    if queue_for(spec.resources.device, spec.resources.num_ranks) not in ALL_QUEUES:
        errors.append(
            (
                "resources.num_ranks",
                f"at most {MAX_RANKS_PER_QUEUE} ranks per job on this service (no worker serves "
                f"{spec.resources.num_ranks}); jobs across machines: docs/deploy.md, DeepSpeed's hostfile",
            )
        )
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
            elif settings.env == "production":
                errors.append(
                    (f"dataset.{field}", f"{ref!r} is not a file id; upload it first (POST /v1/files)")
                )
            elif not Path(ref).expanduser().is_file():
                errors.append(
                    (f"dataset.{field}", f"{ref!r} is neither an uploaded file id nor a file on the service")
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
    if not updates:
        return spec
    return spec.model_copy(update={"dataset": data.model_copy(update=updates)})
