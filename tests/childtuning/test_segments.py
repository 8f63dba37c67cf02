"""One launch for a flat tensor of many parameters' fragments (a ZeRO partition): the
``segments_*`` kernels give exactly what the per-fragment kernels give, fragment by fragment,
eager and compiled, and unmasked segments exactly the plain AdamW step."""

from __future__ import annotations

import pytest
import torch

from childtuning import fused_adamw as fa
from childtuning.bits import pack_bits
from childtuning.draws import keep_threshold, step_key

# (offset, numel, param_index or None for elements no masked parameter owns, start in the param)
LAYOUT = [
    (0, 37, 3, 5),
    (37, 64, None, 0),
    (101, 1, 0, 0),
    (102, 250, 7, 1000),
    (352, 9, None, 0),
    (361, 40, 2, 0),
]
NUMEL = 401


def _state(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    param, grad = torch.randn(NUMEL, generator=gen), torch.randn(NUMEL, generator=gen)
    exp_avg = torch.randn(NUMEL, generator=gen) * 0.1
    exp_avg_sq = torch.rand(NUMEL, generator=gen) * 0.01
    return [param, grad, exp_avg, exp_avg_sq]


CPU = torch.device("cpu")


def _hyper(device: torch.device = CPU) -> fa.AdamScalars:
    group = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
    return fa.scalars(group, 3.0, device)


def _scalar(value: int | float, dtype: torch.dtype, device: torch.device = CPU) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def _per_segment(
    variant: str, state: list[torch.Tensor], compiled: bool, bits: dict[int, torch.Tensor]
) -> None:
    """The reference: one kernel per fragment, ``plain`` between them."""
    dev = state[0].device
    h, scale = _hyper(dev), _scalar(1 / 0.3, torch.float32, dev)
    key = _scalar(step_key(99, 4), torch.int64, dev)
    for offset, numel, index, start in LAYOUT:
        views = [t.narrow(0, offset, numel) for t in state]
        if index is None:
            fa.kernel("plain", compiled)(*views, h)
        elif variant.startswith("grad_bits"):
            mask = fa.BitsMask(bits[index].to(dev), _scalar(0, torch.int64, dev), scale)
            fa.kernel(variant, compiled)(*views, h, mask)
        else:
            threshold = _scalar(keep_threshold(0.3), torch.int64, dev)
            draw = fa.DrawMask(
                key, _scalar(index, torch.int64, dev), _scalar(start, torch.int64, dev), threshold, scale
            )
            fa.kernel(variant, compiled)(*views, h, draw)


def _mask_of(variant: str, bits: dict[int, torch.Tensor]) -> fa.SegmentBits | fa.SegmentDraws:
    """LAYOUT's segment table for ``variant``."""
    scale, key = _scalar(1 / 0.3, torch.float32), _scalar(step_key(99, 4), torch.int64)
    if variant.startswith("grad_bits"):
        segments = [(offset, numel, None if i is None else bits[i]) for offset, numel, i, _ in LAYOUT]
        return fa.segment_bits(segments, NUMEL, scale)
    threshold = _scalar(keep_threshold(0.3), torch.int64)
    return fa.segment_draws(LAYOUT, NUMEL, key, threshold, scale)


def _one_launch(
    variant: str, state: list[torch.Tensor], compiled: bool, bits: dict[int, torch.Tensor]
) -> None:
    dev = state[0].device
    mask = _mask_of(variant, bits)
    on_device = type(mask)(*(t.to(dev) for t in mask))
    fa.kernel(f"segments_{variant}", compiled)(*state, _hyper(dev), on_device)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("variant", ["grad_bits", "grad_bits_strict", "grad_draw", "update_draw"])
def test_one_launch_over_segments_equals_a_kernel_per_fragment(variant: str, compiled: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    bits = {
        index: pack_bits(torch.rand(numel, generator=gen) < 0.3)
        for _, numel, index, _ in LAYOUT
        if index is not None
    }
    reference, ours = _state(1), _state(1)
    _per_segment(variant, reference, compiled, bits)
    _one_launch(variant, ours, compiled, bits)
    for name, a, b in zip(("param", "grad", "exp_avg", "exp_avg_sq"), reference, ours, strict=True):
        assert torch.equal(a, b), f"{variant}: {name} differs at {(a != b).nonzero().flatten()[:10].tolist()}"
    # the masks did something: some masked elements moved differently from a plain step
    plain = _state(1)
    fa.kernel("plain", compiled)(*plain, _hyper())
    assert not torch.equal(plain[0], ours[0])


def test_segment_tables_pad_to_a_power_of_two_with_the_length() -> None:
    rows = [fa.SegmentRow(end, end % 2 == 0) for end in range(1, 71)]
    ends, masked, _, _ = fa.segment_tables(rows, 70, torch.device("cpu"))
    assert ends.numel() == 128 and ends[69] == 70 and bool((ends[70:] == 70).all())
    assert not bool(masked[70:].any())
    assert fa.segment_tables(rows[:3], 3, torch.device("cpu"))[0].numel() == 64


@pytest.mark.parametrize("variant", ["grad_bits", "grad_draw"])
def test_a_compiled_segments_step_is_one_call_with_nothing_around_it(variant: str) -> None:
    """Inside the compiled region, no op falls back to eager (a fallback is a launch of its own)."""
    from torch.profiler import ProfilerActivity, profile

    from bench.gpu_step import COMPILED, dispatched_ops

    gen = torch.Generator().manual_seed(5)
    bits = {i: pack_bits(torch.rand(n, generator=gen) < 0.3) for _, n, i, _ in LAYOUT if i is not None}
    state = _state(1)
    _one_launch(variant, state, True, bits)  # compiles
    hyper, mask = _hyper(), _mask_of(variant, bits)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fa.kernel(f"segments_{variant}", True)(*state, hyper, mask)
    assert dispatched_ops(prof) == {COMPILED: 1}
    inside = {e.name for e in prof.events() if e.cpu_parent is not None and e.name.startswith("aten::")}
    assert not inside - {"aten::empty", "aten::empty_strided"}, inside


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["grad_bits", "grad_bits_strict", "grad_draw", "update_draw"])
def test_on_cuda_one_launch_equals_a_kernel_per_fragment(variant: str) -> None:
    """The path CUDA takes by default (a flat ZeRO partition in one launch), compiled by Triton."""
    gen = torch.Generator().manual_seed(5)
    bits = {i: pack_bits(torch.rand(n, generator=gen) < 0.3) for _, n, i, _ in LAYOUT if i is not None}
    reference, ours = ([t.cuda() for t in _state(1)] for _ in range(2))
    _per_segment(variant, reference, True, bits)
    _one_launch(variant, ours, True, bits)
    for a, b in zip(reference, ours, strict=True):
        assert torch.equal(a, b), f"{variant}: differs at {(a != b).nonzero().flatten()[:10].tolist()}"
