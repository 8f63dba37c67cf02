"""On a CUDA GPU: ChildTuning-D's Fisher pass under DeepSpeed fp16 (loss scale 2^16) chooses the
mask the fp32 pass chooses on the same data; a masked step never makes the host wait for the GPU.
Marked ``gpu``: skipped where no GPU is visible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.procs import free_port
from tests.workers.test_train import env as job_env

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]

PROGRAM = r"""
import json, sys
import deepspeed, torch
from childtuning import ChildTuning, ChildTuningConfig, load_full_mask
from tests.childtuning.zero_program import global_batches, tiny_model

deepspeed.init_distributed(dist_backend="nccl")
out = {}
for precision in ("fp32", "fp16"):
    model = tiny_model()
    config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2},
              "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16}}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    ct = ChildTuning(engine, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    batches = [{k: v.cuda() for k, v in b.items()} for b in global_batches(8, seed=7)]
    summary = ct.compute_fisher(batches)
    ct.save_masks(sys.argv[1] + "/" + precision)
    out[precision] = summary["num_fisher_batches_skipped"]
print(json.dumps(out))
"""


def test_fp16_fisher_mask_agrees_with_fp32(tmp_path: Path) -> None:
    env = {
        **job_env("cuda"),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    skipped = json.loads(proc.stdout.strip().splitlines()[-1])
    assert skipped["fp32"] == 0
    from childtuning import load_full_mask

    a, b = load_full_mask(tmp_path / "fp32"), load_full_mask(tmp_path / "fp16")
    kept = sum(int(m.sum()) for m in a.values())
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    # fp16 rounds the gradients (10-bit mantissa): near-ties may swap, the kept set must not move
    assert both / kept >= 0.98, f"fp16 and fp32 masks share {both / kept:.4f} of the kept elements"


@pytest.mark.parametrize("mode", ["childtuning-d", "childtuning-f", "update-dropout"])
@pytest.mark.parametrize("fused", [True, False])
def test_a_masked_step_never_waits_for_the_gpu(mode: str, fused: bool) -> None:
    """No host-device synchronisation in the hook's step (torch raises on one in sync debug
    mode "error"): each would stall the job until the GPU drains, and with many jobs sharing a
    GPU, until the others' work is done too (F ran 5x slower than vanilla that way)."""
    import torch

    from childtuning import ChildTuning, ChildTuningConfig
    from tests.childtuning.test_hook import batches, tiny_bert

    model = tiny_bert().cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = [{k: v.cuda() for k, v in b.items()} for b in batches(4)]
    ct = ChildTuning(model, ChildTuningConfig(mode=mode, reserve_p=0.3, fused=fused))
    if mode == "childtuning-d":
        ct.compute_fisher(data[:2])
    handle = ct.attach(optimizer)

    def step(batch: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    step(data[0])  # the first step makes the optimizer's state, the masks' tensors, compiles
    torch.cuda.synchronize()
    made = len(ct._scalars)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in data[1:]:
            step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert len(ct._scalars) == made  # the masks' tensors are reused, not made again each step
    handle.remove()
