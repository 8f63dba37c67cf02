"""On a CUDA GPU: ChildTuning-D's Fisher pass under DeepSpeed fp16 (loss scale 2^16) chooses the
mask the fp32 pass chooses on the same data; a masked step never makes the host wait for the GPU.
Marked ``gpu``: skipped where no GPU is visible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from childtuning import load_full_mask, mask_overlap
from service.core.procs import free_port
from tests.workers.test_train import env as job_env

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_fp16_fisher_mask_agrees_with_fp32(tmp_path: Path) -> None:
    """fp16_program.py on the GPU (NCCL, one rank): DeepSpeed's fp16 engine from 2^16, as jobs
    start; test_fp16_engine.py runs the same program on 2 CPU ranks in CI."""
    program = Path(__file__).with_name("fp16_program.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    cmd += [str(program), str(tmp_path), "--device", "cuda", "--scale-power", "16"]
    proc = subprocess.run(cmd, env=job_env("cuda"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["fp32"]["skipped"] == 0 and counts["fp16"]["skipped"] == 0, counts
    overlap = mask_overlap(load_full_mask(tmp_path / "fp32"), load_full_mask(tmp_path / "fp16"))
    # fp16 rounds the gradients (10-bit mantissa): near-ties may swap, the kept set must not move
    assert overlap["overlap"] >= 0.98, f"fp16 and fp32 masks share only: {overlap}"


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
