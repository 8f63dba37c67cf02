"""ChildTuning on a plain torch optimizer, one process: the D mask and each mode's effect."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import BertForSequenceClassification

from childtuning import AdamWHF2021, ChildTuning, ChildTuningConfig, load_full_mask
from tests.childtuning.zero_program import tiny_model


def tiny_bert(seed: int = 0, dropout: float = 0.0) -> BertForSequenceClassification:
    return tiny_model(seed, dropout)


def batches(n: int, seed: int = 1, size: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, 64, (size, 8), generator=g),
            "labels": torch.randint(0, 2, (size,), generator=g),
        }
        for _ in range(n)
    ]


def brute_force_d_mask(model, data, p: float, clip: float = 1.0) -> dict[str, torch.Tensor]:
    """The official recipe, written plainly: per-tensor clipped squared grads, mean, global top-k."""
    model = copy.deepcopy(model)
    model.train()
    names = [n for n, _ in model.named_parameters() if "layer" in n]
    scores = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in names}
    for b in data:
        model.zero_grad()
        model(**b).loss.backward()
        for n, prm in model.named_parameters():
            if n in scores:
                torch.nn.utils.clip_grad_norm_(prm, clip)
                scores[n] += prm.grad**2
    flat = torch.cat([scores[n].view(-1) / len(data) for n in names])
    k = round(p * flat.numel())
    order = sorted(range(flat.numel()), key=lambda i: (-flat[i].item(), i))  # ties: lowest position
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    out, pos = {}, 0
    for n in names:
        out[n] = keep[pos : pos + scores[n].numel()].view_as(scores[n])
        pos += scores[n].numel()
    return out


def test_d_mask_equals_brute_force_topk(tmp_path):
    model, data = tiny_bert(), batches(3)
    ct = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    summary = ct.compute_fisher(data)
    ct.save_masks(tmp_path)
    got = load_full_mask(tmp_path)
    want = brute_force_d_mask(model, data, 0.3)
    assert got.keys() == want.keys()
    for n in want:
        assert torch.equal(got[n], want[n]), n
    k = round(0.3 * summary["num_elements"])
    assert summary["num_kept"] == k == sum(int(m.sum()) for m in got.values())
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for field in ("mode", "reserve_p", "num_elements", "num_kept", "threshold"):
        assert on_disk[field] == summary[field]
    assert all({"numel", "kept"} <= set(v) for v in on_disk["params"].values())
    assert summary["mask_bytes_per_rank"][0] <= summary["num_elements"] / 8 + len(want)


def test_masks_reload_to_the_same_bits_and_check_the_config(tmp_path):
    model, data = tiny_bert(), batches(2)
    ct = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    ct.compute_fisher(data)
    ct.save_masks(tmp_path)
    fresh = ChildTuning(tiny_bert(), ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    fresh.load_masks(tmp_path)
    assert fresh.bits.keys() == ct.bits.keys()
    assert all(torch.equal(fresh.bits[i], ct.bits[i]) for i in ct.bits)
    other = ChildTuning(tiny_bert(), ChildTuningConfig(mode="childtuning-d", reserve_p=0.2))
    with pytest.raises(ValueError, match=r"reserve_p: the saved masks were made with 0\.3"):
        other.load_masks(tmp_path)


def _train(model, optimizer, data, steps):
    for b in data[:steps]:
        optimizer.zero_grad()
        model(**b).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("mode", ["childtuning-d", "childtuning-f"])
def test_sgd_step_leaves_masked_elements_unchanged(mode):
    model, data = tiny_bert(), batches(4)
    ct = ChildTuning(model, ChildTuningConfig(mode=mode, reserve_p=0.3))
    if mode == "childtuning-d":
        ct.compute_fisher(data[:2])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ct.attach(opt)
    for step, b in enumerate(data[2:]):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _train(model, opt, [b], 1)
        for f in ct.fragments:
            p = ct.layout.param(f)
            keep = ct.keep(f, step).view_as(p)
            assert torch.equal(p[~keep], before[f.name][~keep]), f.name
            if keep.sum() > 8:
                assert not torch.equal(p[keep], before[f.name][keep]), f.name


@pytest.mark.parametrize("fused", [False, True])
def test_update_dropout_freezes_masked_elements_even_with_adam_momentum(fused):
    model, data = tiny_bert(), batches(4)
    ct = ChildTuning(model, ChildTuningConfig(mode="update-dropout", reserve_p=0.3, fused=fused))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    handle = ct.attach(opt)
    assert handle.fused is fused
    for step, b in enumerate(data):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _train(model, opt, [b], 1)
        for f in ct.fragments:
            p = ct.layout.param(f)
            keep = ct.keep(f, step).view_as(p)
            assert torch.equal(p[~keep], before[f.name][~keep]), (step, f.name)
            if step > 0 and keep.sum() > 8:  # momentum would move every element; only kept ones may
                assert bool((p[keep] != before[f.name][keep]).any())


@pytest.mark.parametrize("rule", [torch.optim.AdamW, AdamWHF2021], ids=["adamw", "adamw-hf2021"])
@pytest.mark.parametrize("mode", ["vanilla", "childtuning-d", "childtuning-f", "update-dropout"])
def test_fused_step_matches_generic_hooks(mode, rule):
    """In every mode the fused step is the optimizer's own: torch's AdamW, and the 2021 Hugging
    Face rule (through the fused step's rescaled scalars)."""
    data = batches(5)
    results = []
    for fused in (False, True):
        model = tiny_bert()
        ct = ChildTuning(model, ChildTuningConfig(mode=mode, reserve_p=0.4, fused=fused))
        if mode == "childtuning-d":
            ct.compute_fisher(data[:2])
        opt = rule(model.parameters(), lr=1e-3, weight_decay=0.01)
        handle = ct.attach(opt)
        assert handle.fused is fused
        _train(model, opt, data[2:], 3)
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    worst = max((results[0][n] - results[1][n]).abs().max().item() for n in results[0])
    assert worst < 1e-6


def test_vanilla_fused_matches_torch_adamw_and_remove_restores():
    data = batches(3)
    ref_model, model = tiny_bert(), tiny_bert()
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-3, weight_decay=0.01)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    handle = ChildTuning(model, ChildTuningConfig(mode="vanilla", fused=True)).attach(opt)
    _train(ref_model, ref_opt, data, 2)
    _train(model, opt, data, 2)
    worst = max(
        (a - b).abs().max().item() for a, b in zip(ref_model.parameters(), model.parameters(), strict=True)
    )
    assert worst < 1e-6
    assert "step" in opt.__dict__
    handle.remove()
    assert "step" not in opt.__dict__  # back to torch's own AdamW.step
    _train(ref_model, ref_opt, data[2:], 1)
    _train(model, opt, data[2:], 1)
    worst = max(
        (a - b).abs().max().item() for a, b in zip(ref_model.parameters(), model.parameters(), strict=True)
    )
    assert worst < 1e-6


def test_handle_counts_steps_and_restores_them():
    model = tiny_bert()
    ct = ChildTuning(model, ChildTuningConfig(mode="childtuning-f", reserve_p=0.5, fused=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = ct.attach(opt)
    _train(model, opt, batches(2), 2)
    assert h.state_dict() == {"step": 2}
    h.remove()
    h2 = ct.attach(opt)
    h2.load_state_dict({"step": 2})
    assert h2.step == 2


def test_unwrap_removes_once():
    from childtuning.hook import _Unwrap

    calls = []
    r = _Unwrap(lambda: calls.append(1))
    assert "removed" not in repr(r)
    r.remove()
    r.remove()
    assert calls == [1]
    assert repr(r) == "<_Unwrap removed>"
    # A fused handle removed twice leaves a later handle's step in place.
    model = tiny_bert()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ct = ChildTuning(model, ChildTuningConfig(mode="vanilla", fused=True))
    h1 = ct.attach(opt)
    h1.remove()
    h2 = ct.attach(opt)
    fused_step = opt.__dict__["step"]
    h1.remove()
    assert opt.__dict__["step"] is fused_step
    h2.remove()
    assert "step" not in opt.__dict__


# -- the Fisher pass under a loss scale (fp16): the scale is divided out ---------------------------

SCALE = 2.0**16


def _d_bits(ct: ChildTuning) -> dict[int, torch.Tensor]:
    return {i: b.clone() for i, b in ct.bits.items()}


def test_a_scaled_loss_gives_the_mask_of_the_true_gradient():
    """Gradients 2^16 times too large would all hit the per-tensor clip (scores normalised per
    tensor, another mask); with the scale divided out the mask is the unscaled one."""
    model, data = tiny_bert(), batches(3)
    plain = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    plain.compute_fisher(data)

    def scaled_loss(m, b):
        return m(**b).loss * SCALE

    scaled = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    summary = scaled.compute_fisher(data, loss_fn=scaled_loss, grad_scale=SCALE)
    assert _d_bits(scaled).keys() == _d_bits(plain).keys()
    assert all(torch.equal(scaled.bits[i], plain.bits[i]) for i in plain.bits)
    assert summary["num_fisher_batches_skipped"] == 0
    # without the unscale the mask differs (what the fp16 path did before)
    wrong = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    wrong.compute_fisher(data, loss_fn=scaled_loss)
    assert any(not torch.equal(wrong.bits[i], plain.bits[i]) for i in plain.bits)


def test_an_overflowed_batch_is_skipped_and_counted():
    model, data = tiny_bert(), batches(3)
    seen = {"n": 0}
    target = next(p for n, p in model.named_parameters() if "layer.0" in n)

    def overflow_second(grad: torch.Tensor) -> torch.Tensor:
        seen["n"] += 1
        return grad * float("inf") if seen["n"] == 2 else grad

    handle = target.register_hook(overflow_second)
    ct = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    summary = ct.compute_fisher(data)
    handle.remove()
    assert (summary["num_fisher_batches"], summary["num_fisher_batches_skipped"]) == (2, 1)
    two = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    two.compute_fisher([data[0], data[2]])
    assert all(torch.equal(ct.bits[i], two.bits[i]) for i in two.bits)

    always = target.register_hook(lambda g: g * float("inf"))
    with pytest.raises(ValueError, match="overflowed in all 3 Fisher batches"):
        ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3)).compute_fisher(data)
    always.remove()


def test_an_fp16_fisher_pass_lowers_its_loss_scale_on_overflow_and_uses_every_batch():
    """An fp16 model whose gradients overflow at the start scale (2^24 here; DeepSpeed's fp16
    starts at 2^16): at one fixed scale every batch overflowed and the pass failed (what the
    Fisher pass did before); as its own dynamic loss scaler it halves the scale and runs the
    batch again, every batch counts, and the mask is nearly fp32's (fp16 rounding swaps only
    near-ties)."""
    model, data = tiny_bert(), batches(3)
    fp32 = ChildTuning(model, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    fp32.compute_fisher(data)
    half = tiny_bert().half()
    start = 2.0**24

    def scaled_loss(m, b):
        return m(**b).loss.float() * start

    with pytest.raises(ValueError, match="overflowed in all 3 Fisher batches"):  # a fixed scale
        ChildTuning(half, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3)).compute_fisher(
            data, loss_fn=scaled_loss, grad_scale=start
        )
    ct = ChildTuning(half, ChildTuningConfig(mode="childtuning-d", reserve_p=0.3))
    summary = ct.compute_fisher(data, loss_scale=start)
    assert summary["num_fisher_batches"] == 3 and summary["num_fisher_batches_skipped"] == 0
    assert summary["num_fisher_scale_backoffs"] >= 1, summary
    a, b = _d_bits(fp32), _d_bits(ct)
    kept = sum(int(m.sum()) for m in a.values())
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    assert both / kept >= 0.9, f"fp16 and fp32 masks share {both / kept:.4f} of the kept elements"


@pytest.mark.parametrize("mode", ["childtuning-d", "childtuning-f", "update-dropout"])
@pytest.mark.parametrize("fused", [True, False])
def test_a_step_makes_no_tensor_from_a_python_number(mode, fused, monkeypatch):
    """Each step's masks (and the fused AdamW's scalars) reuse tensors made at the first step:
    on a GPU, ``torch.tensor(number, device=...)`` blocks the host until the GPU catches up
    (tests/childtuning/test_gpu.py checks that no step synchronises at all)."""
    model, data = tiny_bert(), batches(5)
    ct = ChildTuning(model, ChildTuningConfig(mode=mode, reserve_p=0.3, fused=fused))
    if mode == "childtuning-d":
        ct.compute_fisher(data[:2])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    handle = ct.attach(opt)
    _train(model, opt, data, 1)
    made = {slot: id(t) for slot, t in ct._scalars.items()}
    assert made
    calls = []
    real = torch.tensor

    def counted(*args, **kwargs):
        calls.append(args[:1])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "tensor", counted)
    for step, b in enumerate(data[1:], start=1):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _train(model, opt, [b], 1)
        for f in ct.fragments:  # the refilled draw keys give each step its own mask
            p = ct.layout.param(f)
            keep = ct.keep(f, step).view_as(p)
            if mode == "update-dropout":  # D and F mask the gradient; momentum and decay move the rest
                assert torch.equal(p[~keep], before[f.name][~keep]), (step, f.name)
    monkeypatch.undo()
    assert calls == []
    assert {slot: id(t) for slot, t in ct._scalars.items()} == made
    handle.remove()


def test_mask_overlap_counts_the_shared_kept_elements_and_the_worst_tensor() -> None:
    from childtuning import mask_overlap

    a = {"x": torch.tensor([True, True, False, True]), "y": torch.tensor([True, False])}
    b = {"x": torch.tensor([True, False, True, True]), "y": torch.tensor([False, True])}
    got = mask_overlap(a, b)
    assert got == {"kept": 4, "other_kept": 4, "shared": 2, "overlap": 0.5, "worst_tensor": ["y", 0.0]}
    assert mask_overlap(a, a)["overlap"] == 1.0
    with pytest.raises(ValueError, match="different tensors"):
        mask_overlap(a, {"x": a["x"]})
