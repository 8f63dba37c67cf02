"""One rank of the multi-rank ChildTuning tests; also the single-process reference.

Usage: torchrun --nproc_per_node W zero_program.py --stage S --out DIR [--fused] [--clip C]
           [--clip-order mask-then-clip] [--strict]
       python zero_program.py --stage -1 --out DIR   (plain PyTorch, one process)

For every mode and for SGD and AdamW it builds the same tiny BERT, computes the D mask on
the same global batches (rank r takes the r-th slice of each), trains a few steps and
writes, per (mode, optimizer): the final full parameters (rank 0), the D mask directory,
and the F/update-dropout keep bits of each step for the elements this rank owns.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification

from childtuning import ChildTuning, ChildTuningConfig

MODES = ("vanilla", "childtuning-d", "childtuning-f", "update-dropout")
GLOBAL_BATCH = 4
NUM_STEPS = 3
NUM_FISHER_BATCHES = 3


def tiny_model(seed: int = 1234, dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(cfg)


def global_batches(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, 64, (GLOBAL_BATCH, 8), generator=g),
            "labels": torch.randint(0, 2, (GLOBAL_BATCH,), generator=g),
        }
        for _ in range(n)
    ]


def rank_slice(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    per = GLOBAL_BATCH // world
    return {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()}


def make_optimizer(name: str, params) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.5)
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)


def full_params(target, stage: int) -> dict[str, torch.Tensor]:
    module = target.module if stage >= 0 else target
    if stage == 3:
        import deepspeed

        out = {}
        for n, p in module.named_parameters():
            with deepspeed.zero.GatheredParameters([p]):
                out[n] = p.detach().clone()
        return out
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def flat_partitions(engine: Any, stage: int) -> int | None:
    """The flat fp32 tensors a ZeRO rank's optimizer steps (one per parameter group, or sub-group
    at stage 3); None without ZeRO."""
    if stage == 3:
        return len(engine.optimizer.fp32_partitioned_groups_flat)
    if stage in (1, 2):
        return len(engine.optimizer.single_partition_of_fp32_groups)
    return None


def run(
    stage: int,
    out: Path,
    fused: bool,
    clip: float,
    modes: list[str],
    optimizers: list[str],
    gas: int = 1,
    resume_at: int | None = None,
    clip_order: str = "clip-then-mask",
    strict: bool = False,
    one_launch: bool | None = None,
) -> None:
    distributed = stage >= 0
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if distributed:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    fisher = global_batches(NUM_FISHER_BATCHES, seed=7)
    train = global_batches(NUM_STEPS, seed=8)
    for mode in modes:
        for opt_name in optimizers:
            tag = f"{mode}-{opt_name}"
            d = out / tag
            cfg = ChildTuningConfig(
                mode=mode,
                reserve_p=0.3,
                seed=99,
                fused=(None if fused else False),
                clip_order=clip_order,
                strict_child=strict and mode == "childtuning-d",
            )

            def build(opt_name: str = opt_name):
                model = tiny_model()
                optimizer = make_optimizer(opt_name, model.parameters())
                if not distributed:
                    return model, optimizer, model
                ds_config = {
                    "train_micro_batch_size_per_gpu": GLOBAL_BATCH // (world * gas),
                    "gradient_accumulation_steps": gas,
                    "zero_optimization": {"stage": stage},
                    "zero_allow_untested_optimizer": True,
                    "gradient_clipping": clip,
                    "steps_per_print": 10**9,
                }
                engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
                return model, optimizer, engine

            model, optimizer, target = build()
            ct = ChildTuning(target, cfg)
            if mode == "childtuning-d":
                ct.compute_fisher([rank_slice(b, rank, world) for b in fisher])
            handle = ct.attach(target if distributed else optimizer)
            handle.one_launch = one_launch
            keeps: dict[str, dict] = {}
            grad_norms: list[float] = []
            for step, batch in enumerate(train):
                if resume_at is not None and step == resume_at:
                    # save, then carry on in a fresh engine and ChildTuning loaded from disk
                    target.save_checkpoint(str(d / "ckpt"))
                    ct.save_masks(d / "masks-at-resume")
                    handle.remove()
                    model, optimizer, target = build()
                    ct = ChildTuning(target, cfg)
                    if mode == "childtuning-d":
                        ct.load_masks(d / "masks-at-resume")
                    target.load_checkpoint(str(d / "ckpt"))
                    handle = ct.attach(target)
                    handle.one_launch = one_launch
                mine = rank_slice(batch, rank, world)
                if distributed:
                    per = GLOBAL_BATCH // (world * gas)
                    for micro in range(gas):
                        part = {k: v[micro * per : (micro + 1) * per] for k, v in mine.items()}
                        target.backward(target(**part).loss)
                        target.step()
                else:
                    optimizer.zero_grad()
                    model(**mine).loss.backward()
                    if clip:  # the official order: clip the whole gradient, then step (which masks)
                        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
                    optimizer.step()
                if mode in ("childtuning-f", "update-dropout") and opt_name == "sgd":
                    for f in ct.fragments:
                        keeps.setdefault(f.name, {})[str(step)] = {
                            "start": f.start,
                            "bits": ct.keep(f, step).to(torch.uint8).tolist(),
                        }
            d.mkdir(parents=True, exist_ok=True)
            ct.save_masks(d / "masks")
            params = full_params(target, stage)
            if rank == 0:
                torch.save(params, d / "params.pt")
                info = {
                    "fused": handle.fused,
                    "mask_bytes": ct.mask_bytes(),
                    "grad_norms": grad_norms,
                    # the last step's compiled AdamW calls, beside the tensors they stepped
                    "kernel_calls": handle.kernel_calls,
                    "optimizer_tensors": flat_partitions(target, stage),
                    "param_tensors": len(ct.layout.params),
                }
                (d / "info.json").write_text(json.dumps(info))
            if ct.layout.distributed or rank == 0:  # unsharded: every rank owns everything
                (d / f"keeps-rank{rank}.json").write_text(json.dumps(keeps))
            handle.remove()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--one-launch", action="store_true", help="a flat partition in one launch on CPU too")
    ap.add_argument("--clip", type=float, default=0.0)
    ap.add_argument("--clip-order", default="clip-then-mask")
    ap.add_argument("--strict", action="store_true", help="strict_child for childtuning-d")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--optimizers", default="sgd,adamw")
    ap.add_argument("--gas", type=int, default=1, help="gradient accumulation steps (DeepSpeed)")
    ap.add_argument("--resume-at", type=int, default=None, help="checkpoint, rebuild and resume at this step")
    a = ap.parse_args()
    run(
        a.stage,
        a.out,
        a.fused,
        a.clip,
        a.modes.split(","),
        a.optimizers.split(","),
        a.gas,
        a.resume_at,
        clip_order=a.clip_order,
        strict=a.strict,
        one_launch=True if a.one_launch else None,
    )
    if torch.distributed.is_initialized():
        # Shut gloo down before the interpreter does: its threads, still joinable while static
        # destructors run at exit, made a busy machine abort a rank ("terminate called without
        # an active exception", SIGABRT) after all its work was written.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
