"""The floor a user compares us with: a plain PyTorch training loop of a causal LM, no ChildTuning,
no DeepSpeed, no service.

Run: ``python -m bench.plain_loop MODEL_DIR [--batch 8] [--seq 512] [--steps 40]`` on a CUDA GPU.
The model from ``MODEL_DIR`` (any ``AutoModelForCausalLM`` folder), bf16 autocast over fp32
weights, torch's fused AdamW, the loss on every token of random token ids (the speed of a step
does not depend on the tokens). Prints tokens/s, ms/step (median over windows of 5 steps after
``--warmup``) and the peak memory, and the model FLOPs per token used for utilisation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def flops_per_token(model_dir: Path, seq: int) -> float:
    """Training FLOPs per token: 6 x the parameters every token multiplies by (the layers' and
    the output head's, not the embedding lookup) plus attention's 12 x layers x hidden x seq."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = hidden // heads
    attn = hidden * hidden * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
    mlp = 3 * hidden * config["intermediate_size"]
    matmul_params = layers * (attn + mlp) + hidden * config["vocab_size"]  # + the head
    return float(6 * matmul_params + 12 * layers * hidden * seq)


def run_plain(model_dir: Path, *, batch: int, seq: int, steps: int, warmup: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = model.cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=True)
    vocab = model.config.vocab_size
    data = [torch.randint(0, vocab, (batch, seq), device="cuda") for _ in range(4)]

    def step(i: int) -> None:
        ids = data[i % len(data)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, window = [], 5
    for w in range(max(1, steps // window)):
        start = time.perf_counter()
        for i in range(window):
            step(w * window + i)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / window)
    ms = statistics.median(times) * 1000
    return {
        "ms_per_step": round(ms, 2),
        "tokens_per_s": round(batch * seq / (ms / 1000), 1),
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.plain_loop", description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    row = run_plain(args.model_dir, batch=args.batch, seq=args.seq, steps=args.steps, warmup=args.warmup)
    row["flops_per_token"] = flops_per_token(args.model_dir, args.seq)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
