"""The Fisher pass of ChildTuning-D, on the gradient elements this rank owns.

Score of element i (as the official code computes it): the mean over batches of the
squared gradient of the batch-mean loss, each parameter's gradient first clipped to norm
``clip_norm``. Under ZeRO a parameter may straddle ranks, so the per-parameter norm is the
square root of partial sums of squares all-reduced across ranks.

Under DeepSpeed fp16, ``engine.backward`` multiplies the loss by the loss scale (2^16 at
first): the gradients read here are divided by it before anything else, so the per-tensor clip
and the scores are those of the true gradient. The pass is its own dynamic loss scaler: where a
batch's scaled gradient overflows (inf or NaN on any rank), every rank halves the scale and
runs the batch again, so every batch counts as in fp32 (the engine's scaler only lowers its
scale in a step, which the Fisher pass never takes: at one fixed scale, too high for the model,
every batch overflowed, or the mask was scored on the few batches that did not). A batch that
still overflows at scale 1 is skipped on every rank and counted; if every batch is, the pass
fails. ``loss_scale`` gives a torch model the same scaling (an fp16 model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch

from childtuning.layout import Fragment, Layout, is_deepspeed_engine

LossFn = Callable[[Any, Any], torch.Tensor]


class FisherResult(NamedTuple):
    scores: list[torch.Tensor]  # float32, one tensor per owned fragment
    used: int  # batches that contributed
    skipped: int  # batches skipped because their gradient overflowed even at scale 1
    backoffs: int = 0  # batches run again at half the loss scale after an overflow


def engine_loss_scale(engine: Any) -> float:
    """The factor DeepSpeed's backward multiplied the loss by: the fp16 loss scale, else 1."""
    if engine is None or not engine.fp16_enabled():
        return 1.0
    optimizer = engine.optimizer
    for name in ("cur_scale", "loss_scale"):
        value = getattr(optimizer, name, None)
        if isinstance(value, int | float | torch.Tensor):
            return float(value)
    scaler = getattr(optimizer, "loss_scaler", None)
    if scaler is not None and hasattr(scaler, "cur_scale"):
        return float(scaler.cur_scale)
    raise RuntimeError("compute_fisher: fp16 is on but the engine's loss scale cannot be read")


def default_loss(model: Any, batch: Any) -> torch.Tensor:
    """``model(**batch).loss`` (Hugging Face models given labels)."""
    out = model(**batch) if isinstance(batch, dict) else model(*batch)
    loss = getattr(out, "loss", None)
    if loss is None:
        if isinstance(out, dict) and "loss" in out:
            return out["loss"]
        raise ValueError("compute_fisher: the model returned no loss; pass loss_fn=(model, batch) -> loss")
    return loss


def fisher_scores(
    target: Any,
    layout: Layout,
    fragments: list[Fragment],
    batches: Iterable[Any],
    *,
    num_batches: int | None,
    clip_norm: float | None,
    train_mode: bool,
    loss_fn: LossFn = default_loss,
    grad_scale: float | None = None,
    loss_scale: float | None = None,
) -> FisherResult:
    """Scores (float32, one tensor per owned fragment), batches used, skipped and run again.

    ``grad_scale``: what the gradients are multiplied by when ``loss_fn`` scales the loss itself
    (a torch.amp GradScaler's scale; no back-off then). ``loss_scale``: the scale to start from,
    multiplied into the loss here and halved on an overflow; under DeepSpeed fp16 it defaults
    to the engine's current loss scale."""
    engine = target if is_deepspeed_engine(target) else None
    module = layout.module
    was_training = module.training
    module.train(train_mode)
    scores = [torch.zeros(f.numel, dtype=torch.float32, device=_device(layout, f)) for f in fragments]
    num_params = len(layout.params)
    used = skipped = backoffs = 0
    engine_scale = engine_loss_scale(engine)  # what engine.backward multiplies the loss by
    scale = loss_scale if loss_scale is not None else engine_scale  # what the gradients carry
    adaptive = grad_scale is None and scale > 1.0
    saved_boundary = getattr(engine, "_is_gradient_accumulation_boundary", None)
    try:
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            while True:
                if engine is not None:
                    engine.set_gradient_accumulation_boundary(True)  # reduce now, whatever the GAS
                    loss = loss_fn(engine, batch)
                    _check_finite(loss, used)
                    factor = scale / engine_scale
                    # In fp32: the engine multiplies by its scale after this, so the gradient
                    # entering this product is that whole scale; in fp16 it is inf from 2^16 up.
                    engine.backward(loss.float() * factor if factor != 1.0 else loss, scale_wrt_gas=False)
                else:
                    loss = loss_fn(module, batch)
                    _check_finite(loss, used)
                    (loss.float() * scale if loss_scale is not None else loss).backward()
                carried = grad_scale if grad_scale is not None else scale
                grads = [_unscaled(layout.grad(f), carried) for f in fragments]
                overflow = torch.zeros(1, dtype=torch.float64)
                overflow[0] = float(any(g is not None and not bool(torch.isfinite(g).all()) for g in grads))
                layout.all_reduce_sum(overflow)  # every rank decides the same
                if overflow.item() > 0 and adaptive and scale > 1.0:
                    _zero_grads(engine, module)
                    scale /= 2
                    backoffs += 1
                    continue
                break
            if overflow.item() > 0:
                _zero_grads(engine, module)
                skipped += 1
                continue
            factors = None
            if clip_norm is not None:
                # per-parameter sums of squares over the rank's fragments, reduced across ranks
                sq = torch.zeros(num_params, dtype=torch.float64)
                for f, g in zip(fragments, grads, strict=True):
                    if g is not None:
                        sq[f.param_index] += g.double().pow(2).sum().cpu()
                layout.all_reduce_sum(sq)
                factors = (clip_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
            for f, g, s in zip(fragments, grads, scores, strict=True):
                if g is None:
                    continue
                gf = g
                if factors is not None:
                    gf = gf * float(factors[f.param_index])
                s.addcmul_(gf, gf)
            _zero_grads(engine, module)
            used += 1
    finally:
        module.train(was_training)
        if engine is not None:
            engine._is_gradient_accumulation_boundary = saved_boundary
    if used == 0:
        if skipped:
            raise ValueError(
                f"compute_fisher: the gradient overflowed in all {skipped} Fisher batches (fp16 loss "
                "scale too high, or a diverging model); run the Fisher pass in bf16 or fp32"
            )
        raise ValueError("compute_fisher: the data gave no batch; the Fisher pass needs at least one")
    for s in scores:
        s.div_(used)
    return FisherResult(scores, used, skipped, backoffs)


def _check_finite(loss: torch.Tensor, index: int) -> None:
    if not torch.isfinite(loss.detach()):
        raise ValueError(f"compute_fisher: non-finite loss {float(loss)} at Fisher batch {index}")


def _unscaled(g: torch.Tensor | None, scale: float) -> torch.Tensor | None:
    """The gradient as fp32, divided by the loss scale it was computed under."""
    if g is None:
        return None
    return g.float() / scale if scale != 1.0 else g.float()


def _device(layout: Layout, frag: Fragment) -> torch.device:
    return layout.master(frag).device


def _zero_grads(engine: Any, module: torch.nn.Module) -> None:
    if engine is None:
        module.zero_grad(set_to_none=True)
        return
    engine.optimizer.zero_grad(set_to_none=True)
    averaged = getattr(engine.optimizer, "averaged_gradients", None)
    if isinstance(averaged, dict):  # ZeRO 1/2 keeps reduced partitions until step()
        for k in list(averaged):
            averaged[k] = None
    if engine.zero_optimization_stage() == 0:
        module.zero_grad(set_to_none=True)
