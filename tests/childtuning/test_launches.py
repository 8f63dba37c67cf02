"""What a fused masked step dispatches, counted by torch's profiler on the CPU (on a GPU, each
dispatched op that is not a view is a kernel launch): the mask adds the same few ops to a step
whatever the number of parameter tensors, 0 for D (the stored bits are read inside the AdamW
kernel) and 1 for F and update-dropout (the step's draw key, written once for all of them)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import BertConfig, BertForSequenceClassification

from bench.gpu_step import COMPILED, dispatched_ops
from childtuning import ChildTuning, ChildTuningConfig

# Ops that only make a view or read a CPU number: no work and no launch on a device.
NOT_LAUNCHES = {
    "aten::view",
    "aten::narrow",
    "aten::item",
    "aten::_local_scalar_dense",
    "TorchDynamo Cache Lookup",
}
MASK_OPS = {"childtuning-d": 0, "childtuning-f": 1, "update-dropout": 1}


def _model(layers: int) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
    )
    return BertForSequenceClassification(config)


def step_ops(mode: str, layers: int) -> tuple[int, Counter[str]]:
    """(parameter tensors, the ops one fused optimizer.step() dispatches at top level)."""
    model = _model(layers)
    batch = {"input_ids": torch.randint(0, 64, (4, 8)), "labels": torch.randint(0, 2, (4,))}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ct = ChildTuning(model, ChildTuningConfig(mode=mode, reserve_p=0.3, fused=True))  # type: ignore[arg-type]
    if mode == "childtuning-d":
        ct.compute_fisher([batch])
    ct.attach(optimizer)
    for _ in range(2):  # the first step makes the state and the reused tensors, and compiles
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    optimizer.zero_grad()
    model(**batch).loss.backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        optimizer.step()
    return sum(1 for _ in model.parameters()), dispatched_ops(prof)


@pytest.mark.parametrize("mode", sorted(MASK_OPS))
def test_the_mask_adds_the_same_ops_to_a_step_whatever_the_number_of_tensors(mode: str) -> None:
    extra = {}
    for layers in (1, 3):
        tensors, plain = step_ops("vanilla", layers)  # the same fused AdamW, no mask
        _, masked = step_ops(mode, layers)
        # one compiled AdamW kernel per tensor in both; the AdamW scalars written once a step
        assert plain[COMPILED] == masked[COMPILED] == tensors
        extra[tensors] = masked.total() - plain.total()
    assert len(extra) == 2 and set(extra.values()) == {MASK_OPS[mode]}, extra


def test_a_steps_adamw_scalars_are_written_once_not_once_a_tensor() -> None:
    tensors, ops = step_ops("vanilla", 3)
    assert tensors > 50 and ops["aten::fill_"] == 7, ops  # lr, betas, eps, decay, 2 corrections
