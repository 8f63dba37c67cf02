"""Response bodies of the REST API (requests are the job contract and multipart uploads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.core.contract import higher_is_better
from service.core.records import FileRecord, JobRecord

__all__ = [
    "CheckpointList",
    "CheckpointPublic",
    "ErrorDetail",
    "ErrorResponse",
    "ExperimentCell",
    "ExperimentCurves",
    "ExperimentJob",
    "ExperimentList",
    "ExperimentPublic",
    "FileList",
    "FilePublic",
    "JobList",
    "JobPublic",
    "PlotList",
    "Progress",
    "RecordPage",
]


class ErrorDetail(BaseModel):
    code: str = Field(
        description="A stable code: unauthorized, not_found, invalid_request, invalid_spec, ..."
    )
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(description="The input at fault (a dotted path such as childtuning.reserve_p).")


class ErrorResponse(BaseModel):
    """Every error answer of the API: ``{"error": {"code", "message", "field"}}``."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "error": {
                        "code": "invalid_spec",
                        "message": "childtuning.reserve_p: must be > 0 and <= 1 (got 1.5)",
                        "field": "childtuning.reserve_p",
                    }
                }
            ]
        }
    }

    error: ErrorDetail


class Progress(BaseModel):
    step: int = Field(description="Optimizer steps done.")
    total_steps: int | None = Field(
        description="Optimizer steps of the whole run (known once training starts)."
    )
    fraction: float | None = Field(description="step / total_steps.")


class JobPublic(BaseModel):
    """A job as the API shows it."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "job-3f2a9c81b7d04e11",
                    "status": "running",
                    "phase": "training",
                    "progress": {"step": 120, "total_steps": 468, "fraction": 0.256},
                    "latest_metrics": {"train": {"kind": "train", "step": 120, "loss": 0.61}, "eval": None},
                    "best_metrics": None,
                    "final_metrics": None,
                    "error": None,
                    "queue": "gpu-x2",
                }
            ]
        }
    }

    id: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    phase: str | None = Field(
        description="Inside running: preparing | fisher | training | evaluating | saving"
    )
    progress: Progress
    latest_metrics: dict[str, dict[str, Any] | None] = Field(
        description="The latest train and eval records (as in metrics.jsonl)."
    )
    best_metrics: dict[str, Any] | None = Field(description="The eval record with the best main metric.")
    final_metrics: dict[str, Any] | None = Field(
        description="The eval record of the final step: the dev score of the final model (model/), "
        "what the ChildTuning paper reports (mean and max over seeds)."
    )
    error: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    queue: str
    worker: str | None
    attempts: int
    nodes: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per attempt, the machines it ran on: {attempt, nodes: [{node, worker, addr}]}.",
    )
    spec: dict[str, Any]
    experiment_id: str | None = Field(default=None, description="The experiment this job is a cell of.")
    higher_is_better: bool | None = Field(
        default=None,
        description="Whether a larger value of the job's main metric (an eval record's main_metric) "
        "is better; null before its first evaluation.",
    )

    @classmethod
    def of(cls, record: JobRecord) -> JobPublic:
        total = record.total_steps
        main = (record.latest_eval or record.best_eval or {}).get("main_metric")
        return cls(
            id=record.id,
            status=record.status,
            phase=record.phase,
            progress=Progress(
                step=record.step, total_steps=total, fraction=round(record.step / total, 4) if total else None
            ),
            latest_metrics={"train": record.latest_train, "eval": record.latest_eval},
            best_metrics=record.best_eval,
            final_metrics=record.final_eval,
            error=record.error,
            cancel_requested=record.cancel_requested,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            queue=record.queue,
            worker=record.worker,
            attempts=record.attempts,
            nodes=record.nodes,
            spec=record.spec,
            experiment_id=record.experiment_id,
            higher_is_better=higher_is_better(main) if isinstance(main, str) else None,
        )


class JobList(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as cursor= for the next page; null on the last page.")


class RecordPage(BaseModel):
    """Records after a cursor; pass ``next_cursor`` as ``after=`` to get only newer ones."""

    data: list[dict[str, Any]]
    next_cursor: str


class FilePublic(BaseModel):
    id: str
    filename: str
    format: str
    size_bytes: int
    num_rows: int
    columns: list[str]
    created_at: float
    layout: str = Field(
        description="table (columns, for classification and regression), or causal-lm rows: "
        "prompt-completion or chat (every row checked at upload)"
    )

    @classmethod
    def of(cls, record: FileRecord) -> FilePublic:
        return cls.model_validate(record.model_dump(exclude={"tenant"}))


class FileList(BaseModel):
    data: list[FilePublic]


class CheckpointPublic(BaseModel):
    name: str = Field(
        description='"model" (final), "best", or a DeepSpeed checkpoint folder (step-00000012).'
    )
    kind: str = Field(
        description="huggingface (model, best) | deepspeed (step-N) | delta (a strict ChildTuning-D "
        "child as a sparse change of the base: childtuning.apply_delta(base_dir, delta_dir) rebuilds it)"
    )
    step: int | None
    size_bytes: int
    num_files: int
    archive_url: str


class CheckpointList(BaseModel):
    data: list[CheckpointPublic]


class Comparison(BaseModel):
    against: str = Field(description="The baseline cell compared with (its label).")
    n: int = Field(description="Seeds both cells have a score for.")
    mean_diff: float | None = Field(description="Mean over those seeds of (this cell - baseline).")
    ci95: list[float] | None = Field(description="95% Student-t interval of mean_diff (null below 2 seeds).")
    verdict: str = Field(description="better | worse | within noise | too few seeds")


class ExperimentCell(BaseModel):
    """A point of the grid without the seed axis: its jobs are its seeds."""

    label: str
    values: dict[str, Any]
    jobs: list[str]
    scores: dict[str, float] = Field(description="Seed -> score, for the jobs that have one.")
    n: int
    mean: float | None
    std: float | None = Field(description="Sample standard deviation over seeds (null below 2).")
    min: float | None
    max: float | None
    baseline: bool
    vs_baseline: Comparison | None


class ExperimentJob(BaseModel):
    id: str
    values: dict[str, Any]
    status: str
    phase: str | None = Field(description="waiting: held back by max_parallel; else as for a job.")
    step: int
    total_steps: int | None
    score: float | None
    error: str | None


class ExperimentPublic(BaseModel):
    """An experiment: its jobs, their scores, and how each cell compares with the baseline."""

    id: str
    name: str | None
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    created_at: float
    finished_at: float | None
    metric: str | None = Field(description="The metric compared (the task's main one by default).")
    score: str = Field(description="final (the last evaluation's, the paper's choice) or best")
    higher_is_better: bool
    max_parallel: int
    axes: dict[str, list[Any]]
    seed_axis: str | None
    baseline: dict[str, Any] | None
    cancel_requested: bool
    counts: dict[str, int] = Field(description="Jobs by status; waiting = queued jobs held back.")
    jobs: list[ExperimentJob]
    cells: list[ExperimentCell]
    best_cell: str | None = Field(description="The label of the cell with the best mean.")


class ExperimentList(BaseModel):
    data: list[ExperimentPublic]
    next_cursor: str | None


class CurvePoint(BaseModel):
    step: int
    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


class CurveCell(BaseModel):
    label: str
    values: dict[str, Any]
    points: list[CurvePoint]


class ExperimentCurves(BaseModel):
    metric: str | None
    cells: list[CurveCell]


class PlotInfo(BaseModel):
    name: str
    description: str
    url: str


class PlotList(BaseModel):
    data: list[PlotInfo]
