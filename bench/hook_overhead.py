"""Optimizer step time with ChildTuning vs plain AdamW, at BERT-base size (about 110M fp32).

Run: ``python -m bench.hook_overhead [--reps 7]``. Synthetic gradients, one process, CPU.
Every row is the median of ``--reps`` timed steps after two warm-up steps (the first fused
step compiles its kernel). Ratios are against torch's own AdamW (foreach) in the same run.

The "official" rows re-implement the published ChildTuningAdamW faithfully: a
``torch.distributions.Bernoulli`` sample per parameter per step (F) or a stored bool mask
per parameter (D), multiplied into the gradient, then its per-parameter AdamW loop.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.shapes import bert_base_shapes
from childtuning import ChildTuning, ChildTuningConfig


class Params(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.names = []
        for name, shape in bert_base_shapes():
            key = name.replace(".", "__")
            self.register_parameter(key, nn.Parameter(torch.randn(shape, generator=gen) * 0.02))
            self.names.append(name)

    def named_parameters(self, *args, **kwargs):  # keep the dotted names the filter looks at
        for name, (_, p) in zip(self.names, super().named_parameters(*args, **kwargs), strict=True):
            yield name, p


def fresh(seed: int = 1) -> tuple[Params, list[torch.Tensor]]:
    model = Params()
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.shape, generator=gen) * 1e-3 for p in model.parameters()]
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    return model, grads


def timed(step: Callable[[], None], reps: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class OfficialChildTuningAdamW(torch.optim.Optimizer):
    """The published ChildTuningAdamW's step, re-implemented: mask, then a per-parameter AdamW."""

    def __init__(
        self, params, lr=2e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, reserve_p=0.3, mode=None
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.reserve_p, self.mode = reserve_p, mode
        self.gradient_mask: dict[torch.Tensor, torch.Tensor] = {}

    def set_gradient_mask(self, mask):
        self.gradient_mask = mask

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if self.mode == "ChildTuning-D" and p in self.gradient_mask:
                    grad = grad * self.gradient_mask[p]
                elif self.mode == "ChildTuning-F":
                    mask = torch.distributions.Bernoulli(
                        grad.new_full(size=grad.size(), fill_value=self.reserve_p)
                    )
                    grad = grad * mask.sample() / self.reserve_p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = (
                    group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                )
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def random_d_mask(ct: ChildTuning) -> None:
    gen = torch.Generator().manual_seed(3)
    ct.select_from_scores([torch.rand(f.numel, generator=gen) for f in ct.fragments])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--p", type=float, default=0.3)
    args = ap.parse_args()
    rows: list[tuple[str, float]] = []
    n = sum(p.numel() for p in Params().parameters())
    print(f"{n / 1e6:.1f}M fp32 parameters, {torch.get_num_threads()} threads, median of {args.reps}")

    model, _ = fresh()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    first = timed(opt.step, args.reps)
    del model, opt

    for mode in ("vanilla", "childtuning-d", "childtuning-f", "update-dropout"):
        for fused in (True, False):
            if mode == "vanilla" and not fused:
                continue
            model, _ = fresh()
            opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
            ct = ChildTuning(model, ChildTuningConfig(mode=mode, reserve_p=args.p, fused=fused))
            if mode == "childtuning-d":
                random_d_mask(ct)
            ct.attach(opt)
            label = f"{mode}, {'fused' if fused else 'eager hooks (fused=False)'}"
            rows.append((label, timed(opt.step, args.reps)))
            print(f"  {label}: {rows[-1][1]:.3f} s", flush=True)
            del model, opt, ct

    for official_mode in ("ChildTuning-D", "ChildTuning-F"):
        model, _ = fresh()
        official = OfficialChildTuningAdamW(model.parameters(), lr=2e-5, reserve_p=args.p, mode=official_mode)
        gen = torch.Generator().manual_seed(3)
        official.set_gradient_mask(
            {
                p: torch.rand(p.shape, generator=gen) < args.p
                for n_, p in model.named_parameters()
                if "layer" in n_
            }
        )
        rows.append((f"official {official_mode} (re-implemented)", timed(official.step, args.reps)))
        del model, official

    # the baseline is timed first and last: both medians shown, the ratio uses their mean
    model, _ = fresh()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    last = timed(opt.step, args.reps)
    del model, opt
    base = (first + last) / 2
    rows.insert(0, (f"torch AdamW (foreach), no ChildTuning (first {first:.3f}, last {last:.3f})", base))
    print("\n| optimizer step | median s | vs torch AdamW |")
    print("|---|---:|---:|")
    for label, t in rows:
        print(f"| {label} | {t:.3f} | {t / base:.2f}x |")
    by = dict(rows)
    f_ours = by["childtuning-f, fused"]
    f_official = by["official ChildTuning-F (re-implemented)"]
    print(f"\nF: official / ours = {f_official / f_ours:.1f}x")


if __name__ == "__main__":
    main()
