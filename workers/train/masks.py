"""ChildTuning on a run: its masks (ChildTuning-D: the saved ones, else the Fisher pass over the
training set; the other modes: the draw's summary) and the hook it attaches to the engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from service.core.jobdir import MASKS_DIR
from workers.train.errors import JobError

if TYPE_CHECKING:
    from childtuning import ChildTuning, ChildTuningHandle
    from workers.train.state import RunState

__all__ = ["FISHER_EPOCH", "attach_childtuning", "fisher_batches"]

FISHER_EPOCH = -1  # the Fisher pass reads its own shuffle of the training set


def attach_childtuning(run: RunState) -> tuple[ChildTuning, ChildTuningHandle]:
    """ChildTuning's masks, then its hook on ``run.engine``. The Fisher pass is collective."""
    from childtuning import ChildTuning, ChildTuningConfig
    from childtuning.masks_io import SUMMARY
    from workers.train.losses import global_causal_lm_loss

    try:
        cfg = ChildTuningConfig(**run.spec.childtuning.config_kwargs(run.spec.hyperparameters.seed))
        ct = ChildTuning(run.engine, cfg)
    except ValueError as exc:  # e.g. a param_filter that selects no parameter of this model
        raise JobError(f"childtuning.{exc}") from None
    masks = run.job_dir / MASKS_DIR
    if cfg.mode == "childtuning-d":
        if (masks / SUMMARY).is_file():
            summary = ct.load_masks(masks)
        elif run.resumed_from is not None:
            raise JobError(
                f"masks: the job resumes from step {run.resumed_from} but {masks} holds no D mask; "
                "the mask must be the one training started with (start the job afresh)"
            )
        else:
            run.records.set_phase("fisher")
            if run.info is not None and run.info.is_causal_lm:
                loss_fn = partial(global_causal_lm_loss, comm=run.comm)
                summary = ct.compute_fisher(fisher_batches(run), loss_fn=loss_fn)
            else:
                summary = ct.compute_fisher(fisher_batches(run))
            ct.save_masks(masks)
        run.records.event("fisher", **{k: v for k, v in summary.items() if k != "params"})
    else:
        ct.save_masks(masks)  # the summary of the draw
    return ct, ct.attach(run.engine)


def fisher_batches(run: RunState) -> Iterator[dict[str, Any]]:
    """This rank's micro-batches of the Fisher pass (``fisher_num_batches`` at most), on its
    device, with ``progress`` events a few times a second. A stop signal ends it on every rank."""
    from workers.train.data import shard_indices

    hp, plan = run.spec.hyperparameters, run.plan
    assert plan is not None and run.train_set is not None
    order = shard_indices(len(run.train_set), FISHER_EPOCH, hp.seed, run.rank, run.world_size, hp.batch_size)
    per = plan.micro_per_rank
    total = len(order) // per
    if run.spec.childtuning.fisher_num_batches is not None:
        total = min(total, run.spec.childtuning.fisher_num_batches)
    shown = 0.0
    for i in range(total):
        run.check_stop()
        yield run.to_device(run.train_set.batch(order[i * per : (i + 1) * per]))
        now = time.monotonic()
        if now - shown > 0.5 or i + 1 == total:
            shown = now
            run.records.event("progress", phase="fisher", done=i + 1, total=total)
