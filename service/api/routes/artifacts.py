"""``/v1/jobs/{id}/checkpoints`` and ``/mask``: what a job wrote to its directory."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from service.api.deps import SettingsDep, StoreDep, TenantDep
from service.api.errors import ApiError, error_responses
from service.api.schemas import CheckpointList, CheckpointPublic
from service.core.artifacts import find_checkpoint, list_checkpoints, mask_summary, tar_stream
from service.core.usecases.jobs import owned_job

__all__ = ["router"]

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"], responses=error_responses(401, 404, 503))


@router.get(
    "/{job_id}/checkpoints", response_model=CheckpointList, summary="The job's models and checkpoints"
)
def checkpoints(job_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep) -> CheckpointList:
    """``model`` (final) and ``best`` are Hugging Face folders; ``step-N`` are DeepSpeed checkpoints."""
    record = owned_job(store, job_id, tenant)
    out = []
    for ckpt in list_checkpoints(settings.jobs_dir / job_id):
        size, count = ckpt.size()
        step = ckpt.step
        if step is None and ckpt.name == "best" and record.best_eval:
            step = record.best_eval.get("step")
        if step is None and ckpt.name == "model" and record.status == "succeeded":
            step = record.total_steps
        out.append(
            CheckpointPublic(
                name=ckpt.name,
                kind=ckpt.kind,
                step=step,
                size_bytes=size,
                num_files=count,
                archive_url=f"/v1/jobs/{job_id}/checkpoints/{ckpt.name}/archive",
            )
        )
    return CheckpointList(data=out)


@router.get(
    "/{job_id}/checkpoints/{name}/archive",
    summary="Download a model or checkpoint as a tar",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-tar": {}}, "description": "An uncompressed tar stream."},
        **error_responses(404, descriptions={404: "No such job for this API key, or no such checkpoint."}),
    },
)
def archive(
    job_id: str, name: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> StreamingResponse:
    """A tar of the folder (members under ``<name>/``); extracted, model/best load with from_pretrained."""
    owned_job(store, job_id, tenant)
    ckpt = find_checkpoint(settings.jobs_dir / job_id, name)
    if ckpt is None:
        raise ApiError(
            404,
            "not_found",
            f"job {job_id} has no checkpoint {name!r} (GET /v1/jobs/{job_id}/checkpoints lists them)",
        )
    headers = {"Content-Disposition": f'attachment; filename="{job_id}-{name}.tar"'}
    return StreamingResponse(tar_stream(ckpt), media_type="application/x-tar", headers=headers)


@router.get(
    "/{job_id}/mask",
    summary="The child network: the ChildTuning-D mask's summary",
    responses=error_responses(
        404, descriptions={404: "No such job for this API key, or no mask summary (yet) (code no_mask)."}
    ),
)
def mask(job_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep) -> dict[str, object]:
    """Kept fraction per layer, threshold, counts (``masks/summary.json``)."""
    record = owned_job(store, job_id, tenant)
    summary = mask_summary(settings.jobs_dir / job_id)
    if summary is None:
        mode = record.spec.get("childtuning", {}).get("mode", "childtuning-d")
        why = "no fixed mask in this mode" if mode != "childtuning-d" else "not computed yet (Fisher pass)"
        raise ApiError(404, "no_mask", f"job {job_id} has no mask summary: {why} (mode {mode})")
    return summary
