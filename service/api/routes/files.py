"""``/v1/files``: upload (checked: size, format, columns, rows), list, get, delete datasets."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile

from service.api.deps import SettingsDep, StoreDep, TenantDep
from service.api.errors import ApiError, error_responses
from service.api.schemas import FileList, FilePublic
from service.core.datasets import DatasetFileError, inspect_file
from service.core.records import FileRecord, new_file_id, valid_file_id
from service.core.store import Store
from service.core.usecases.text import NOT_UNICODE, is_unicode

__all__ = ["router"]

router = APIRouter(prefix="/v1/files", tags=["files"], responses=error_responses(401, 503))
log = logging.getLogger("childtune.api")


def owned_file(store: Store, file_id: str, tenant: str) -> FileRecord:
    record = store.get_file(file_id, tenant) if valid_file_id(file_id) else None
    if record is None:
        raise ApiError.not_found("file", file_id)
    return record


@router.post(
    "",
    status_code=201,
    response_model=FilePublic,
    summary="Upload a csv, tsv or jsonl dataset",
    responses=error_responses(
        400,
        413,
        422,
        descriptions={422: "The file is not valid csv, tsv or jsonl, or a form field is missing or invalid."},
    ),
)
def upload_file(
    file: Annotated[
        UploadFile,
        File(
            description="The dataset: csv/tsv with a header row, or jsonl.",
            examples=["text,label\nthe best film of the year,1\na waste of two hours,0\n"],
        ),
    ],
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    format: Annotated[
        Literal["csv", "tsv", "jsonl"] | None, Form(description="Default: by file name, else by content.")
    ] = None,
) -> FilePublic:
    """Checked on arrival: the size limit, the format (every row), the columns; the row count is reported.
    A jsonl file whose first row is ``{"prompt", "completion"}`` or ``{"messages": [...]}`` is
    causal-lm data: every row is checked as one (docs/llm.md) and a bad one is refused with its line."""
    file_id = new_file_id()
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.files_dir / f".upload-{file_id}"
    limit = settings.max_upload_bytes
    size = 0
    try:
        with tmp.open("wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413,
                        "too_large",
                        f"the file is larger than {settings.max_upload_mb:g} MB (CHILDTUNE_MAX_UPLOAD_MB)",
                        "file",
                    )
                out.write(chunk)
        filename = os.path.basename(file.filename or "upload")[:255]
        filename = filename.encode("utf-8", "replace").decode()  # no lone surrogates in answers
        try:
            summary = inspect_file(tmp, filename, format)
        except DatasetFileError as exc:
            raise ApiError(422, "invalid_file", f"{filename}: {exc}", "file") from exc
        except (ValueError, RecursionError) as exc:
            # The reader's own errors name the line; these escaped it (a JSON number of more than
            # 4300 digits, nesting deeper than the decoder's limit), but the file is still at fault.
            log.warning("upload %r: %s: %s", filename, type(exc).__name__, exc)
            reason = str(exc).split(";")[0][:200]
            raise ApiError(422, "invalid_file", f"{filename}: cannot be read ({reason})", "file") from exc
        if not all(is_unicode(name) for name in summary.columns):
            raise ApiError(
                422,
                "invalid_file",
                f"{filename}: a column name is {NOT_UNICODE}",
                "file",
            )
        record = FileRecord(
            id=file_id,
            tenant=tenant,
            filename=filename,
            format=summary.format,
            size_bytes=size,
            num_rows=summary.num_rows,
            columns=summary.columns,
            layout=summary.layout,
        )
        tmp.replace(settings.files_dir / file_id)
        try:
            store.create_file(record)
        except Exception:
            (settings.files_dir / file_id).unlink(missing_ok=True)
            raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return FilePublic.of(record)


@router.get("", response_model=FileList, summary="List uploaded files")
def list_files(tenant: TenantDep, store: StoreDep) -> FileList:
    return FileList(data=[FilePublic.of(r) for r in store.list_files(tenant)])


@router.get(
    "/{file_id}", response_model=FilePublic, summary="One uploaded file", responses=error_responses(404)
)
def get_file(file_id: str, tenant: TenantDep, store: StoreDep) -> FilePublic:
    return FilePublic.of(owned_file(store, file_id, tenant))


@router.delete(
    "/{file_id}",
    status_code=204,
    summary="Delete an uploaded file",
    responses=error_responses(
        404, 409, descriptions={409: "A queued or running job reads the file (code file_in_use)."}
    ),
)
def delete_file(file_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep) -> Response:
    """Refused (409) while a queued or running job of yours reads the file."""
    record = owned_file(store, file_id, tenant)
    path = str(settings.files_dir / record.id)
    for status in ("queued", "running"):
        for job_id in store.jobs_with_status(status):
            job = store.get_job(job_id, tenant)
            data = job.resolved_spec.get("dataset", {}) if job else {}
            if path in (data.get("train_file"), data.get("eval_file")):
                raise ApiError(
                    409, "file_in_use", f"file {file_id} is used by {status} job {job_id}", "file_id"
                )
    store.delete_file(record)
    (settings.files_dir / record.id).unlink(missing_ok=True)
    return Response(status_code=204)
