"""The 2021 Hugging Face AdamW rule (``optimizer: adamw-hf2021``), which the official ChildTuning
code's ChildTuningAdamW follows, against a reference written here from that rule. (The fused
ChildTuning step against the optimizer's own, in every mode and for both rules:
tests/childtuning/test_hook.py::test_fused_step_matches_generic_hooks.)"""

from __future__ import annotations

import math

import pytest
import torch

from childtuning import AdamWHF2021, ChildTuning, ChildTuningConfig
from tests.childtuning.test_hook import batches, tiny_bert

LR, DECAY, BETAS, EPS = 1e-3, 0.01, (0.9, 0.999), 1e-6


def reference_step(params: list[torch.Tensor], state: dict[int, dict[str, torch.Tensor]], t: int) -> None:
    """One step of the 2021 rule, as transformers.AdamW (correct_bias=True) wrote it: moments,
    eps added to sqrt(v), the bias corrections folded into the step size, then the decay of the
    updated weights."""
    b1, b2 = BETAS
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        s = state.setdefault(i, {"m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        s["m"] = b1 * s["m"] + (1 - b1) * p.grad
        s["v"] = b2 * s["v"] + (1 - b2) * p.grad * p.grad
        step_size = LR * math.sqrt(1 - b2**t) / (1 - b1**t)
        with torch.no_grad():
            p -= step_size * s["m"] / (s["v"].sqrt() + EPS)
            p -= LR * DECAY * p


def run_reference(steps: int) -> list[torch.Tensor]:
    model, data = tiny_bert(), batches(steps)
    params = list(model.parameters())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for t, b in enumerate(data, start=1):
        model.zero_grad()
        model(**b).loss.backward()
        reference_step(params, state, t)
    return [p.detach().clone() for p in params]


def run_optimizer(
    make: type[torch.optim.Optimizer], steps: int, *, fused: bool | None = None
) -> list[torch.Tensor]:
    model, data = tiny_bert(), batches(steps)
    opt = make(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=DECAY)
    if fused is not None:
        handle = ChildTuning(model, ChildTuningConfig(mode="vanilla", fused=fused)).attach(opt)
        assert handle.fused is fused
    for b in data:
        opt.zero_grad()
        model(**b).loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("fused", [None, True])
def test_the_2021_rule_matches_its_reference_within_1e_6(fused: bool | None) -> None:
    """The optimizer's own step and the fused kernel, 4 steps of a tiny BERT."""
    reference = run_reference(4)
    assert worst(run_optimizer(AdamWHF2021, 4, fused=fused), reference) <= 1e-6


def test_torchs_adamw_is_another_rule_the_reference_tells_apart() -> None:
    """The same 4 steps under torch's AdamW: elements differ by more than 1e-4 (3,769 of the
    5,826 here, at most 2.6e-3), so the test above could fail."""
    reference = run_reference(4)
    torch_rule = run_optimizer(torch.optim.AdamW, 4)
    differing = sum(int(((x - y).abs() > 1e-4).sum()) for x, y in zip(torch_rule, reference, strict=True))
    assert worst(torch_rule, reference) > 1e-4 and differing > 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="betas"):
        AdamWHF2021([torch.zeros(1, requires_grad=True)], betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="weight_decay"):
        AdamWHF2021([torch.zeros(1, requires_grad=True)], weight_decay=-1)
