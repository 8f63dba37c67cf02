"""The fused masked AdamW step of one flat ZeRO partition: a kernel per parameter fragment (before)
against one launch over a segment table (now), beside the unmasked one-launch step (vanilla).

Run: ``python -m bench.segments_step [--model minilm|smollm2] [--device cpu|cuda] [--reps 9]``
(``--layers N`` for another depth).

The partition is what one ZeRO-1/2 rank steps when it owns every element (world size 1): the
model's parameters flattened in order into one fp32 tensor, each parameter a segment, every
segment masked (D: random bits at p = 0.3; F and update-dropout: the step's counter draws).
Each row is the median over ``--reps`` calls of the kernel time (the device synchronised around
each call, so host time and launches count) and the ops the call dispatched (torch profiler; on a
GPU, each is a kernel launch), with the number of fragments beside them. Ratios are against the
unmasked step in the same process. One JSON line per row on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.gpu_step import build, count_profile
from childtuning import fused_adamw as fa
from childtuning.bits import pack_bits
from childtuning.draws import keep_threshold, step_key

VARIANTS = {"childtuning-d": "grad_bits", "childtuning-f": "grad_draw", "update-dropout": "update_draw"}


def partition(
    model_name: str, layers: int | None, device: str
) -> tuple[list[tuple[int, int]], list[torch.Tensor]]:
    """(each parameter's (offset, numel) in the flat tensor, [param, grad, exp_avg, exp_avg_sq])."""
    sizes = [p.numel() for p in build(model_name, layers, "cpu").parameters()]
    total = sum(sizes)
    gen = torch.Generator().manual_seed(0)
    state = [torch.randn(total, generator=gen) * s for s in (0.02, 1e-3, 1e-4)]
    state.append(torch.rand(total, generator=gen) * 1e-8)
    offsets, pos = [], 0
    for n in sizes:
        offsets.append((pos, n))
        pos += n
    return offsets, [t.to(device) for t in state]


def timed(call: Callable[[], None], device: str, reps: int) -> float:
    """Median ms of ``call`` (the device synchronised around each), after two warm calls."""

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        call()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def calls(
    mode: str, offsets: list[tuple[int, int]], state: list[torch.Tensor], device: str
) -> dict[str, Any]:
    """The per-fragment loop and the one-launch call of ``mode`` over the same partition."""
    dev = torch.device(device)
    h = fa.scalars({"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}, 3.0, dev)

    def scalar(value: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(value, dtype=dtype, device=dev)

    scale, key, zero = (
        scalar(1 / 0.3, torch.float32),
        scalar(step_key(1, 3), torch.int64),
        scalar(0, torch.int64),
    )
    threshold = scalar(keep_threshold(0.3), torch.int64)
    name = VARIANTS[mode]
    gen = torch.Generator().manual_seed(1)
    bits = [pack_bits(torch.rand(n, generator=gen) < 0.3).to(dev) for _, n in offsets]
    numel = state[0].numel()
    if mode == "childtuning-d":
        masks: list[Any] = [fa.BitsMask(b, zero, scale) for b in bits]
        table: Any = fa.segment_bits(
            [(o, n, b) for (o, n), b in zip(offsets, bits, strict=True)], numel, scale
        )
    else:
        masks = [
            fa.DrawMask(key, scalar(i, torch.int64), zero, threshold, scale) for i in range(len(offsets))
        ]
        rows = [(offset, n, i, 0) for i, (offset, n) in enumerate(offsets)]
        table = fa.segment_draws(rows, numel, key, threshold, scale)
    per_fragment_kernel, table_kernel = fa.kernel(name, True), fa.kernel(f"segments_{name}", True)

    def per_fragment() -> None:
        for (offset, n), mask in zip(offsets, masks, strict=True):
            per_fragment_kernel(*(t.narrow(0, offset, n) for t in state), h, mask)

    def one_launch() -> None:
        table_kernel(*state, h, table)

    def plain() -> None:
        fa.kernel("plain", True)(*state, h)

    return {"per_fragment": per_fragment, "one_launch": one_launch, "plain": plain}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("minilm", "smollm2"), default="minilm")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=None, help="override the model's depth")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--modes", default=",".join(VARIANTS))
    a = ap.parse_args(argv)
    offsets, state = partition(a.model, a.layers, a.device)
    base: dict[str, Any] = {
        "model": a.model,
        "device": a.device,
        "fragments": len(offsets),
        "elements": state[0].numel(),
    }
    plain_ms = None
    for mode in a.modes.split(","):
        fns = calls(mode, offsets, state, a.device)
        if plain_ms is None:
            plain_ms = timed(fns["plain"], a.device, a.reps)
            plain_ops = count_profile(fns["plain"], a.device)
            print(
                json.dumps(
                    {**base, "mode": "vanilla", "kernel": "plain", "ms": round(plain_ms, 3), **plain_ops}
                )
            )
        for kind in ("per_fragment", "one_launch"):
            ms = timed(fns[kind], a.device, a.reps)
            row = {
                **base,
                "mode": mode,
                "kernel": kind,
                "ms": round(ms, 3),
                "vs_vanilla": round(ms / plain_ms, 3),
            }
            print(json.dumps({**row, **count_profile(fns[kind], a.device)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
