"""Training-step time of the job's loop (DeepSpeed engine + ChildTuning) vs a plain torch loop.

Run: ``python -m bench.train_step [--steps 10] [--batch-size 16] [--seq-len 128]``. One
process, CPU, the real MiniLM-L6 (``minilm-l6`` preset) on one fixed batch of RTE pairs padded
to ``--seq-len``. Every row is the median of ``--steps`` timed steps after three warm-up steps
(the first fused step compiles its kernels), split into forward+backward and the optimizer
step. Ratios are against plain torch (AdamW foreach, clip_grad_norm_ 1.0) in the same run.

Rows: ``torch`` (the baseline), ``deepspeed`` (ZeRO-2 engine, clipping 1.0, as the training
program builds it, without a hook), and ``deepspeed + <mode>`` (the same with ChildTuning's
hook attached, as every job runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

MODES = ("vanilla", "childtuning-d", "childtuning-f", "update-dropout")


def batch(batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    from service.core.contract import DatasetSpec
    from workers.train.data import load_examples
    from workers.train.model_io import model_location

    tokenizer = AutoTokenizer.from_pretrained(model_location("minilm-l6"))
    examples, _ = load_examples(DatasetSpec(preset="glue/rte"), "train")
    chosen = examples[:batch_size]
    enc = tokenizer(
        [e.text for e in chosen],
        [e.text_pair or "" for e in chosen],
        truncation=True,
        max_length=seq_len,
        padding="max_length",
        return_tensors="pt",
    )
    return {**dict(enc), "labels": torch.tensor([int(e.label) for e in chosen])}


def model() -> Any:
    from transformers import AutoModelForSequenceClassification

    from workers.train.model_io import model_location

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_location("minilm-l6"), num_labels=2)


def measure(step_parts: Any, steps: int) -> tuple[float, float]:
    """Median (forward+backward, optimizer step) seconds."""
    fb, opt = [], []
    for i in range(3 + steps):
        t0 = time.perf_counter()
        step_parts[0]()
        t1 = time.perf_counter()
        step_parts[1]()
        t2 = time.perf_counter()
        if i >= 3:
            fb.append(t1 - t0)
            opt.append(t2 - t1)
    return statistics.median(fb), statistics.median(opt)


def torch_row(data: dict[str, torch.Tensor], steps: int) -> tuple[float, float]:
    m = model().train()
    optimizer = torch.optim.AdamW(m.parameters(), lr=4e-5, weight_decay=0.01)

    def fwd_bwd() -> None:
        optimizer.zero_grad(set_to_none=True)
        m(**data).loss.backward()

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        optimizer.step()

    return measure((fwd_bwd, step), steps)


def deepspeed_row(data: dict[str, torch.Tensor], steps: int, mode: str | None) -> tuple[float, float]:
    import deepspeed

    from childtuning import ChildTuning, ChildTuningConfig

    m = model()
    optimizer = torch.optim.AdamW(m.parameters(), lr=4e-5, weight_decay=0.01)
    config = {
        "train_micro_batch_size_per_gpu": int(data["input_ids"].shape[0]),
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 2},
        "gradient_clipping": 1.0,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    engine, *_ = deepspeed.initialize(model=m, optimizer=optimizer, config=config)
    engine.train()
    if mode is not None:
        ct = ChildTuning(engine, ChildTuningConfig(mode=mode, reserve_p=0.3))  # type: ignore[arg-type]
        if mode == "childtuning-d":
            ct.compute_fisher([data, data])
        ct.attach(engine)

    def fwd_bwd() -> None:
        engine.backward(engine(**data).loss)

    return measure((fwd_bwd, engine.step), steps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    a = ap.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", "29517")
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    data = batch(a.batch_size, a.seq_len)
    rows: list[tuple[str, tuple[float, float]]] = [
        ("torch (AdamW foreach, clip 1.0)", torch_row(data, a.steps))
    ]
    rows.append(("deepspeed ZeRO-2, no hook", deepspeed_row(data, a.steps, None)))
    for mode in MODES:
        rows.append((f"deepspeed ZeRO-2 + {mode}", deepspeed_row(data, a.steps, mode)))
    base = sum(rows[0][1])
    print(
        f"MiniLM-L6, batch {a.batch_size} x {a.seq_len} tokens, {torch.get_num_threads()} threads, "
        f"median of {a.steps} steps"
    )
    print("| loop | forward+backward s | optimizer step s | step total s | vs torch | samples/s |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, (fb, opt) in rows:
        total = fb + opt
        speed = a.batch_size / total
        print(f"| {name} | {fb:.3f} | {opt:.3f} | {total:.3f} | {total / base:.2f}x | {speed:.1f} |")


if __name__ == "__main__":
    main()
