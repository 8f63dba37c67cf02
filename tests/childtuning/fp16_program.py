"""ChildTuning-D's Fisher pass under a DeepSpeed ZeRO-2 engine in fp32 and in fp16 (DeepSpeed's
own dynamic loss scaler, starting at 2^``--scale-power``), on the same batches; each mask saved
under ``OUT/<precision>``, and per precision the batches skipped and the scale back-offs printed
as one JSON line.

Usage: ``torchrun --nproc_per_node W fp16_program.py OUT --device cpu|cuda [--scale-power 16]``.

On the CPU, DeepSpeed's accelerator reports fp16 only where oneDNN has fp16 kernels (it refuses
the engine otherwise: "Type fp16 is not supported on your device"); torch computes fp16 on any
CPU, so this program tells DeepSpeed so (:class:`Fp16Cpu`). The engine, its ZeRO optimizer and
its loss scaler are DeepSpeed's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from childtuning import ChildTuning, ChildTuningConfig
from tests.childtuning.zero_program import GLOBAL_BATCH, global_batches, rank_slice, tiny_model


def use_fp16_on_cpu() -> None:
    from deepspeed.accelerator import set_accelerator
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    class Fp16Cpu(CPU_Accelerator):  # type: ignore[misc]
        def is_fp16_supported(self) -> bool:
            return True

        def supported_dtypes(self) -> list[torch.dtype]:
            return [torch.float, torch.bfloat16, torch.float16]

    set_accelerator(Fp16Cpu())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", choices=("cpu", "cuda"), required=True)
    ap.add_argument("--scale-power", type=int, default=16)
    a = ap.parse_args()
    if a.device == "cpu":
        use_fp16_on_cpu()
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo" if a.device == "cpu" else "nccl")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    out = {}
    for precision in ("fp32", "fp16"):
        model = tiny_model()
        config = {
            "train_micro_batch_size_per_gpu": GLOBAL_BATCH // world,
            "zero_optimization": {"stage": 2},
            "fp16": {"enabled": precision == "fp16", "initial_scale_power": a.scale_power},
            "zero_allow_untested_optimizer": True,
        }
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        ct = ChildTuning(engine, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
        batches = [
            {k: v.to(a.device) for k, v in rank_slice(b, rank, world).items()}
            for b in global_batches(8, seed=7)
        ]
        summary = ct.compute_fisher(batches)
        ct.save_masks(a.out / precision)
        out[precision] = {
            "skipped": summary["num_fisher_batches_skipped"],
            "backoffs": summary["num_fisher_scale_backoffs"],
            "used": summary["num_fisher_batches"],
        }
    if rank == 0:
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
