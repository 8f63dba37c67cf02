"""Evaluating a run on the dev set: the scores (:func:`classifier_scores`, :func:`causal_lm_scores`),
greedy generation (:func:`generate`), and :func:`evaluate`, what the recipe does with a score
(the ``eval`` record, best and final, early stopping, ``predictions.json``, the ``best/`` export).

Every function takes the rank's :class:`workers.train.state.RunState` and is collective: each rank
scores its share of the dev set (``eval_shard``) in as many forwards as every other rank
(ZeRO-3 gathers parameters in each forward), and the shares are gathered in order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from service.core.contract.vocabulary import higher_is_better
from service.core.jobdir import BEST_DIR, PREDICTIONS_FILE, atomic_write_text
from workers.train.export import export

if TYPE_CHECKING:
    from workers.train.state import RunState

__all__ = ["causal_lm_scores", "classifier_scores", "eval_chunks", "evaluate", "generate"]


def evaluate(run: RunState, step: int, *, last: bool, at_start: bool = False) -> bool:
    """Evaluate on the dev set (collective); True when early stopping ends training here,
    which makes this evaluation the final one.

    ``at_start`` (``eval_at_start``, step 0, before any update): a reference record only;
    it is never best or final, exports nothing and does not count for early stopping."""

    assert run.plan is not None and run.info is not None and run.eval_set is not None
    run.records.set_phase("evaluating")
    run.engine.eval()
    if run.info.is_causal_lm:
        record, predictions = causal_lm_scores(run, step)
    else:
        record, predictions = classifier_scores(run)
    main_key = f"eval_{run.info.main_metric}"
    value = record[main_key]
    better = (lambda a, b: a > b) if higher_is_better(run.info.main_metric) else (lambda a, b: a < b)
    patience = run.spec.hyperparameters.early_stopping_patience
    if at_start:
        is_best = stopping = last = False
    else:
        is_best = run.best is None or better(value, run.best["main_value"])
        run.evals_without_improvement = 0 if is_best else run.evals_without_improvement + 1
        stopping = not last and patience is not None and run.evals_without_improvement >= patience
        last = last or stopping
    run.records.metric(
        "eval",
        step,
        total_steps=run.plan.total_steps,
        epoch=step / run.plan.steps_per_epoch,
        **record,
        main_metric=main_key,
        main_value=value,
        is_best=is_best,
        is_final=last,
        **({"at_start": True} if at_start else {}),
    )
    if at_start:
        run.engine.train()
        return False
    if last and run.is_main and predictions is not None:
        atomic_write_text(
            run.job_dir / PREDICTIONS_FILE, json.dumps({"step": step, "predictions": predictions})
        )
    run.last_eval = {"step": step, **record}
    if last:
        run.final = {"step": step, "main_metric": main_key, "main_value": value, "metrics": record}
    if is_best:
        run.best = {"step": step, "main_metric": main_key, "main_value": value, "metrics": record}
        export(run, BEST_DIR, step, record)
        run.records.event("best", step=step, main_metric=main_key, main_value=value)
    if stopping:
        assert run.best is not None
        run.records.event(
            "early_stopped",
            step=step,
            patience=patience,
            best_step=run.best["step"],
            main_metric=main_key,
            best_value=run.best["main_value"],
        )
    run.engine.train()
    if not last:  # after the final evaluation comes saving, not more training
        run.records.set_phase("training")
    return stopping


def classifier_scores(run: RunState) -> tuple[dict[str, Any], list[Any]]:
    """The dev metrics of a classifier or regressor, and its predictions. Collective."""
    import numpy as np
    import torch

    from workers.train.glue_metrics import compute_metrics, prediction_spread

    assert run.plan is not None and run.info is not None and run.eval_set is not None
    n = len(run.eval_set)
    outputs: list[Any] = []
    loss_sum = 0.0
    with torch.no_grad():
        for idx in eval_chunks(run, max(32, run.plan.micro_per_rank * 2)):
            batch = run.to_device(run.eval_set.batch(idx or [0]))
            out = run.engine(**batch)
            if idx:
                outputs.append(out.logits.float().cpu())
                loss_sum += float(out.loss) * len(idx)
    logits = torch.cat(outputs) if outputs else torch.zeros(0, run.info.num_labels)
    gathered = run.comm.gather_objects((logits.numpy(), loss_sum))
    all_logits = np.concatenate([g[0] for g in gathered])
    labels = run.eval_set.labels.numpy()
    predictions = all_logits[:, 0] if run.info.is_regression else all_logits
    scores = compute_metrics(run.info.metric, predictions, labels)
    record: dict[str, Any] = {"eval_loss": sum(g[1] for g in gathered) / max(1, n)}
    record.update({f"eval_{k}": v for k, v in scores.items()})
    spread = prediction_spread(run.info.metric, predictions, labels)  # a collapsed run shows here
    record.update({f"eval_{k}": v for k, v in spread.items()})
    return record, predictions.tolist()


def causal_lm_scores(run: RunState, step: int) -> tuple[dict[str, Any], list[str] | None]:
    """Causal-lm dev metrics: loss, perplexity and token accuracy over every completion token;
    greedy answers to the first ``eval_samples`` prompts (the ``samples`` event); with metric
    exact_match, every row's greedy answer against its completion. Collective."""
    import torch

    from workers.train.data import SftDataset
    from workers.train.glue_metrics import exact_match
    from workers.train.losses import token_sums

    assert run.plan is not None and run.info is not None and isinstance(run.eval_set, SftDataset)
    hp, data = run.spec.hyperparameters, run.eval_set
    n = len(data)
    sums = torch.zeros(3, dtype=torch.float64, device=run.comm.reduce_device)  # loss, tokens, correct
    with torch.no_grad():
        for idx in eval_chunks(run, max(4, run.plan.micro_per_rank * 2)):
            batch = run.to_device(data.batch(idx or [0]))
            out = run.engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            if idx:
                ce, count, correct = token_sums(out.logits, batch["labels"])
                sums += torch.stack([ce.double(), count.double(), correct.double()]).to(sums.device)
    run.comm.sum_(sums)
    loss_sum, tokens, right = (float(x) for x in sums.tolist())
    mean = loss_sum / max(1.0, tokens)
    record: dict[str, Any] = {
        "eval_loss": mean,
        "eval_perplexity": math.exp(min(mean, 700.0)),
        "eval_token_accuracy": right / max(1.0, tokens),
        "eval_tokens": int(tokens),
    }
    shown = list(range(min(hp.eval_samples, n)))
    if shown:  # every rank generates them (ZeRO-3 needs all ranks in each forward)
        answers = generate(run, shown, hp.max_new_tokens)
        run.records.event(
            "samples",
            step=step,
            samples=[
                {
                    "prompt": data.questions[i][-500:],
                    "reference": data.references[i][:500],
                    "answer": a[:500],
                }
                for i, a in zip(shown, answers, strict=True)
            ],
        )
    if run.info.metric != "exact_match":
        return record, None
    mine_answers: list[str] = []
    max_new = min(hp.max_new_tokens, run.answer_tokens + 4)
    for idx in eval_chunks(run, 16):
        mine_answers += generate(run, idx or [0], max_new)[: len(idx)]
    answers = [a for part in run.comm.gather_objects(mine_answers) for a in part]
    record["eval_exact_match"] = exact_match(answers, data.references)
    return record, answers


def eval_chunks(run: RunState, size: int) -> Iterator[list[int]]:
    """This rank's evaluation rows (``eval_shard``) in chunks of ``size``, as many chunks on
    every rank (ZeRO-3 gathers parameters in each forward): a rank out of rows gets ``[]``
    and runs a forward on row 0 whose output it drops."""
    from workers.train.data import eval_shard

    assert run.eval_set is not None
    n = len(run.eval_set)
    mine = eval_shard(n, run.rank, run.world_size)
    for r in range(math.ceil(math.ceil(n / run.world_size) / size)):
        yield list(mine[r * size : (r + 1) * size])


def generate(run: RunState, indices: list[int], max_new_tokens: int) -> list[str]:
    """Greedy answers to the prompts of evaluation rows ``indices`` (text after the prompt).
    Collective under ZeRO-3 (``synced_gpus``: every rank runs forwards until all are done)."""
    import torch

    from workers.train.data import SftDataset

    assert isinstance(run.eval_set, SftDataset)
    batch = run.to_device(run.eval_set.generation_batch(indices))
    synced = run.comm.distributed and run.engine.zero_optimization_stage() == 3
    with torch.no_grad():
        out = run.engine.module.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            synced_gpus=synced,
            pad_token_id=run.tokenizer.pad_token_id,
        )
    new = out[:, batch["input_ids"].shape[1] :].cpu()
    return [str(t) for t in run.tokenizer.batch_decode(new, skip_special_tokens=True)]
