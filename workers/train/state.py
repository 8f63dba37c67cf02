"""What one rank knows of its run (:class:`RunState`): the job and the rank's place in it, the
progress that ``status.json``, the records and the checkpoints carry, and what each setup step
built. The recipe (:class:`workers.train.program.Run`) is a :class:`RunState` that runs; the
pieces it calls (:mod:`~workers.train.evaluation`, :mod:`~workers.train.export`,
:mod:`~workers.train.masks`) take the state, so none of them imports the recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.core.contract import JobSpec
from service.core.jobdir import CHECKPOINTS_DIR
from workers.train.collectives import Collectives
from workers.train.errors import Interrupted
from workers.train.plan import Plan
from workers.train.records import Records

if TYPE_CHECKING:
    import torch

    from childtuning import ChildTuning, ChildTuningHandle
    from workers.train.data import DatasetInfo, SftDataset, TokenizedDataset

__all__ = ["RunState"]


class RunState:
    """Every attribute of a run, declared here; those known only after a setup step are None (or
    empty) until that step (named beside each) fills them. The job's ``resources`` (the number of
    ranks, the device) are read from ``spec`` alone; ``rank`` is this process's place among them."""

    def __init__(self, job_dir: Path, spec: JobSpec, rank: int) -> None:
        # The job and this rank's place in it.
        self.job_dir = job_dir
        self.spec = spec
        self.rank = rank
        self.world_size = spec.resources.num_ranks
        self.is_main = rank == 0
        self.ckpt_dir = job_dir / CHECKPOINTS_DIR
        self.comm = Collectives(rank, self.world_size)  # the process group, once _setup_distributed ran
        # Progress: what status.json, the records and the checkpoints say.
        self.stop_signal: int | None = None
        self.step = 0
        self.best: dict[str, Any] | None = None
        # The final model's dev score (what the paper reports), set by the last evaluation.
        self.final: dict[str, Any] | None = None
        # Evaluations in a row without a new best (early stopping), kept in checkpoints.
        self.evals_without_improvement = 0
        self.last_eval: dict[str, Any] = {}  # {"step": ..., eval metrics} of the latest evaluation
        self.resumed_from: int | None = None  # the checkpoint's step, when _resume found one
        # Events, metric records, the phase and status.json (rank 0 writes; opened by execute()).
        self.records = Records(job_dir, spec, is_main=self.is_main, progress=self._progress)
        # Filled by setup(), each by the step named.
        self.device_kind: str | None = None  # _setup_device: "cpu" or "cuda"
        self.info: DatasetInfo | None = None  # _setup_data
        self.plan: Plan | None = None  # _setup_data
        self.torch_device: torch.device | None = None  # _setup_distributed: where batches go
        self.model_path: str | None = None  # _setup_model
        self.tokenizer: Any = None  # _setup_model
        self.hf_model: Any = None  # _setup_model: the Hugging Face model the engine wraps
        # _setup_datasets: token ids (SftDataset, with loss labels, for causal-lm)
        self.train_set: TokenizedDataset | SftDataset | None = None
        self.eval_set: TokenizedDataset | SftDataset | None = None
        self.answer_tokens = 0  # _setup_datasets, causal-lm: the longest evaluation answer, in tokens
        self.engine: Any = None  # _setup_engine: the DeepSpeed engine
        self.optimizer: Any = None  # _setup_engine
        self.scheduler: Any = None  # _setup_engine
        self.ct: ChildTuning | None = None  # _setup_childtuning
        self.handle: ChildTuningHandle | None = None  # _setup_childtuning: the attached hook

    def _progress(self) -> dict[str, Any]:
        """What status.json says of the run beside its status and phase."""
        total = self.plan.total_steps if self.plan else None
        return {"step": self.step, "total_steps": total, "best": self.best, "final": self.final}

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.torch_device, non_blocking=True) for k, v in batch.items()}

    def check_stop(self) -> None:
        """Raise :class:`Interrupted` on every rank once any rank got a stop signal. Collective."""
        if self.comm.any_rank(self.stop_signal is not None):
            raise Interrupted()
