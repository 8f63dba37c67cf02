"""A run's models out of the engine: :func:`export` writes ``model/`` or ``best/`` (weights
consolidated from the ZeRO shards, the tokenizer and the card: ``workers.train.model_io``), and
:func:`audit_child` checks a ChildTuning-D model against its base (``masks/audit.json``) and
writes a strict child's ``delta/``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from service.core.jobdir import DELTA_DIR, MASKS_DIR, MODEL_DIR, atomic_write_text
from workers.train.errors import JobError

if TYPE_CHECKING:
    from workers.train.state import RunState

__all__ = ["audit_child", "export"]


def export(run: RunState, which: str, step: int, metrics: dict[str, Any]) -> None:
    """Export the engine's model to ``job_dir/which`` (rank 0 writes; collective under ZeRO-3)."""
    from workers.train.model_io import export_model, full_state_dict, job_card

    state = full_state_dict(run.engine)  # collective under ZeRO-3
    if run.is_main:
        assert state is not None and run.plan is not None and run.info is not None
        card = job_card(
            run.spec,
            run.job_dir,
            run.info,
            which=which,
            step=step,
            total_steps=run.plan.total_steps,
            metrics=metrics,
            **({"final": run.final} if which == MODEL_DIR else {}),
        )
        path = export_model(run.job_dir / which, run.hf_model, state, run.tokenizer, card)
        run.records.event("model", which=which, path=str(path), step=step)
    run.comm.barrier()


def audit_child(run: RunState) -> None:
    """ChildTuning-D, rank 0: compare the exported model with the base (``masks/audit.json``);
    fail under ``audit_strict`` when an element outside the child moved; for a strict child,
    export ``delta/``, the child as a sparse change of the base."""
    from childtuning import load_full_mask
    from childtuning.delta import AUDIT, audit, load_weights, rounded, write_delta

    assert run.model_path is not None
    job_dir, ct_spec = run.job_dir, run.spec.childtuning
    masks = load_full_mask(job_dir / MASKS_DIR)
    tuned, base = load_weights(job_dir / MODEL_DIR), load_weights(run.model_path)
    precision = run.spec.resources.precision
    # Under bf16 or fp16 DeepSpeed starts its fp32 master weights from the module's rounded
    # copies: an element nobody updated holds the base rounded to that precision, not the base.
    report = audit(tuned, rounded(base, precision), masks)
    report["base_rounded_to"] = None if precision == "fp32" else precision
    atomic_write_text(job_dir / MASKS_DIR / AUDIT, json.dumps(report, indent=1) + "\n")
    run.records.event(
        "audit",
        kept_fraction=report["kept_fraction"],
        changed_fraction=report["changed_fraction"],
        changed_outside=report["changed_outside"],
        child_only=report["child_only"],
    )
    if ct_spec.audit_strict and not report["child_only"]:
        raise JobError(
            f"childtuning.audit_strict: {report['changed_outside']} elements outside the child moved "
            "(weight decay moves masked elements unless childtuning.strict_child is true)"
        )
    if ct_spec.strict_child:
        info = write_delta(
            job_dir / DELTA_DIR, job_dir / MODEL_DIR, tuned, base, masks, base_rounded_to=precision
        )
        run.records.event("delta", delta_bytes=info["delta_bytes"], model_bytes=info["model_bytes"])
