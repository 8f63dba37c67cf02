"""The training loss of a batch: the model's own, R-Drop's, or a causal LM's on completion tokens.

R-Drop (Liang et al., 2021): two forward passes with dropout give outputs P1 and P2 of the
same examples; the loss is ``CE(P1, y) + CE(P2, y) + alpha/2 * (KL(P2 || P1) + KL(P1 || P2))``.
For regression the cross-entropies are squared errors and the KL pair becomes
``alpha * MSE(o1, o2)`` (the same symmetric form with the squared distance). The two passes
run as one forward over the batch stacked twice: dropout draws differ row by row.

Causal-lm (:func:`causal_lm_loss`, :func:`token_sums`): next-token cross-entropy on the tokens
whose label is not -100 (completion and assistant tokens, ``workers.train.data.sft``).

:func:`train_loss` picks the job's: what a training step (and the Fisher pass) backpropagates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from workers.train.collectives import Collectives
    from workers.train.data import DatasetInfo


def model_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of the model on ``batch`` (labels included)."""
    out = model(**batch)
    return out.loss, out.logits


def rdrop_loss(
    model: Any, batch: dict[str, torch.Tensor], alpha: float, *, regression: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R-Drop loss, logits of the first pass). ``model`` must be in train mode (dropout on)."""
    labels = batch["labels"]
    inputs = {k: torch.cat([v, v], dim=0) for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    first, second = logits.chunk(2, dim=0)
    if regression:
        a, b = first.squeeze(-1).float(), second.squeeze(-1).float()
        target = labels.float()
        task = F.mse_loss(a, target) + F.mse_loss(b, target)
        consistency = alpha * F.mse_loss(a, b)
    else:
        task = F.cross_entropy(first.float(), labels) + F.cross_entropy(second.float(), labels)
        log_p = F.log_softmax(first.float(), dim=-1)
        log_q = F.log_softmax(second.float(), dim=-1)
        kl_qp = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)  # KL(Q || P)
        kl_pq = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)  # KL(P || Q)
        consistency = alpha / 2 * (kl_qp + kl_pq)
    return task + consistency, first


def token_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over trained tokens, their count, and how many the argmax
    predicts: position t's logits score label t+1; labels of -100 are not counted."""
    shifted = labels[:, 1:]
    scores = logits[:, :-1].float()
    keep = shifted != -100
    ce = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), shifted.reshape(-1), reduction="sum")
    correct = ((scores.argmax(dim=-1) == shifted) & keep).sum()
    return ce, keep.sum(), correct


def causal_lm_loss(model: Any, batch: dict[str, torch.Tensor], tokens_per_rank: float) -> torch.Tensor:
    """The causal-lm training loss: cross-entropy summed over the batch's completion tokens,
    divided by ``tokens_per_rank`` (the global batch's trained tokens over the number of ranks).

    DeepSpeed averages the ranks' gradients, so the step's gradient is that of the mean over
    every trained token of the global batch, whatever the number of ranks (a per-rank mean
    would weigh a rank's tokens by how few it got)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    ce, _, _ = token_sums(out.logits, batch["labels"])
    return ce / tokens_per_rank


def global_causal_lm_loss(model: Any, batch: dict[str, torch.Tensor], comm: Collectives) -> torch.Tensor:
    """The causal-lm loss of a micro-batch: the mean over the GLOBAL micro-batch's completion
    tokens (their count is summed over the ranks), so the gradient is the same at any number of
    ranks. Collective."""
    from workers.train.data import IGNORE_INDEX

    count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum().to(torch.float64).reshape(1)
    comm.sum_(count)
    return causal_lm_loss(model, batch, max(1.0, count.item()) / comm.world_size)


def train_loss(
    model: Any, batch: dict[str, torch.Tensor], info: DatasetInfo, *, rdrop_alpha: float, comm: Collectives
) -> torch.Tensor:
    """A micro-batch's training loss: a causal LM's (:func:`global_causal_lm_loss`), R-Drop's
    (``rdrop_alpha > 0``) or the model's own."""
    if info.is_causal_lm:
        return global_causal_lm_loss(model, batch, comm)
    if rdrop_alpha > 0:
        return rdrop_loss(model, batch, rdrop_alpha, regression=info.is_regression)[0]
    return model_loss(model, batch)[0]
