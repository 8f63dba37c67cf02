"""One training step of each ChildTuning mode against vanilla, on a GPU (or the CPU, to rehearse).

Run: ``python -m bench.gpu_step [--model minilm|smollm2] [--precision fp32|bf16] [--jobs N]``.

- ``minilm``: a randomly initialised BERT of MiniLM-L6's shape (6 layers, hidden 384, 12 heads),
  sequence classification, batch 32 of 128 tokens by default.
- ``smollm2``: a randomly initialised Llama of SmolLM2-135M's shape (30 layers, hidden 576),
  causal-lm loss on every token, batch 8 of 512 by default.

torch's AdamW (its default multi-tensor implementation) with the ChildTuning hook attached, fused
(``ChildTuningConfig.fused=True``: the mask inside the compiled AdamW pass) and generic
(``fused=False``: the mask applied by the hook around torch's own step). ``vanilla`` is torch's
AdamW with no hook at all. bf16 is autocast over fp32 weights and optimizer state (the master
copy DeepSpeed's bf16 keeps, where the masks act).

Each row is the median over ``--windows`` windows of ``--steps`` steps (the device synchronised
at each window's ends, so host-device stalls count) after ``--warmup`` steps (the first
compiles). ``--jobs N`` runs N such processes at once, as N jobs share one GPU. Also per row: the
peak device memory; for D, the Fisher pass per batch against one forward and backward; with
``--profile``, the kernel launches and host syncs of one ``optimizer.step()`` (torch profiler),
beside the number of parameter tensors. Ratios are against vanilla in the same process.
Each row is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any, cast

MODES = ("vanilla", "childtuning-d", "childtuning-f", "update-dropout")
SHAPES = {"minilm": (32, 128), "smollm2": (8, 512)}
# The CUDA runtime's kernel launch calls and the calls that make the host wait for the device.
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def build(model_name: str, layers: int | None, device: str) -> Any:
    """A randomly initialised model of the named shape (``layers`` overrides its depth)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if model_name == "minilm":
        config = BertConfig(
            vocab_size=30522,
            hidden_size=384,
            num_hidden_layers=layers or 6,
            num_attention_heads=12,
            intermediate_size=1536,
        )
        model: Any = BertForSequenceClassification(config)
    else:  # SmolLM2-135M's config.json
        llama = LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=layers or 30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(llama)
    return model.to(device)


def batches_for(model_name: str, batch: int, seq: int, device: str, n: int = 8) -> list[dict[str, Any]]:
    import torch

    gen = torch.Generator().manual_seed(1)
    vocab = 30522 if model_name == "minilm" else 49152
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=gen)
        labels = torch.randint(0, 2, (batch,), generator=gen) if model_name == "minilm" else ids.clone()
        out.append({"input_ids": ids.to(device), "labels": labels.to(device)})
    return out


# Ops that only make a view or read a CPU number: no work and no launch on a device.
NOT_LAUNCHES = frozenset(
    {"aten::view", "aten::narrow", "aten::item", "aten::_local_scalar_dense", "TorchDynamo Cache Lookup"}
)
COMPILED = "Torch-Compiled Region"  # the call of a compiled graph ("Torch-Compiled Region: 0/1")


def dispatched_ops(prof: Any) -> Counter[str]:
    """The ops a profiled call dispatched at top level, views and CPU reads left out: on a GPU
    each is a kernel launch (a compiled region launches its graph's kernels)."""
    top = [COMPILED if e.name.startswith(COMPILED) else e.name for e in prof.events() if e.cpu_parent is None]
    return Counter(n for n in top if n not in NOT_LAUNCHES)


def count_profile(step: Any, device: str) -> dict[str, int]:
    """One call of ``step``: the ops it dispatched (:func:`dispatched_ops`), the compiled regions
    among them and, on CUDA, the kernel launches and host syncs the runtime saw."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    ops = dispatched_ops(prof)
    out = {"dispatched_ops": ops.total(), "compiled_calls": ops[COMPILED], "fills": ops["aten::fill_"]}
    if device == "cuda":
        names = [e.name for e in prof.events()]
        out["launches"] = sum(n in LAUNCHES for n in names)
        out["host_syncs"] = sum(n in SYNCS for n in names) + sum("Memcpy DtoH" in n for n in names)
    return out


def measure(args: argparse.Namespace, mode: str, fused: bool) -> dict[str, Any]:
    """One row: ``mode`` (fused or generic) in this process."""
    import torch

    from childtuning import ChildTuning, ChildTuningConfig
    from childtuning.config import Mode

    device = args.device
    batch, seq = args.batch or SHAPES[args.model][0], args.seq or SHAPES[args.model][1]
    model = build(args.model, args.layers, device)
    data = batches_for(args.model, batch, seq, device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def forward_backward(b: dict[str, Any]) -> None:
        with autocast:
            loss = model(**b).loss
        loss.backward()

    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-5, weight_decay=0.01)
    row: dict[str, Any] = {"mode": mode, "fused": fused if mode != "vanilla" else None}
    row["param_tensors"] = sum(1 for p in model.parameters() if p.requires_grad)
    if mode != "vanilla":
        ct = ChildTuning(model, ChildTuningConfig(mode=cast(Mode, mode), reserve_p=0.3, fused=fused))
        if mode == "childtuning-d":

            def loss_fn(m: Any, b: dict[str, Any]) -> Any:
                with autocast:
                    return m(**b).loss

            fisher_batches = data[: args.fisher_batches]
            ct.compute_fisher(fisher_batches, loss_fn=loss_fn)  # warm
            sync()
            start = time.perf_counter()
            ct.compute_fisher(fisher_batches, loss_fn=loss_fn)
            sync()
            fisher = (time.perf_counter() - start) / len(fisher_batches)
            model.zero_grad(set_to_none=True)
            for b in fisher_batches[:1]:
                forward_backward(b)  # warm
            sync()
            start = time.perf_counter()
            for b in fisher_batches:
                forward_backward(b)
            sync()
            plain = (time.perf_counter() - start) / len(fisher_batches)
            model.zero_grad(set_to_none=True)
            row["fisher_ms_per_batch"] = round(fisher * 1000, 2)
            row["fisher_vs_fwd_bwd"] = round(fisher / plain, 2)
        ct.attach(optimizer)

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_backward(data[i % len(data)])
        optimizer.step()

    for i in range(args.warmup):
        step(i)
    if device == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.windows):
        sync()
        start = time.perf_counter()
        for i in range(args.steps):
            step(i)
        sync()
        times.append((time.perf_counter() - start) / args.steps * 1000)
    row["ms_per_step"] = round(statistics.median(times), 3)
    if device == "cuda":
        row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if args.profile:
        optimizer.zero_grad(set_to_none=True)
        forward_backward(data[0])
        sync()
        row["optimizer_step"] = count_profile(optimizer.step, device)
        sync()
    return row


def variants(modes: list[str], fused: str) -> list[tuple[str, bool]]:
    kinds = {"both": (True, False), "fused": (True,), "generic": (False,)}[fused]
    return [(m, f) for m in modes for f in (kinds if m != "vanilla" else (False,))]


def shape_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "layers": args.layers,
        "batch": args.batch or SHAPES[args.model][0],
        "seq": args.seq or SHAPES[args.model][1],
        "precision": args.precision,
        "jobs": args.jobs,
        "device": args.device,
    }


def child(args: argparse.Namespace) -> int:
    """Every variant in turn in this process, a JSON line each as it is measured (so a budget
    that cuts the run keeps the rows before it); ratios against this process's vanilla."""
    if args.code:
        sys.path.insert(0, args.code)
    base = None
    for mode, fused in variants(args.modes.split(","), args.fused):
        row = {**shape_of(args), **measure(args, mode, fused)}
        if args.device == "cuda":
            import torch

            torch.cuda.empty_cache()  # the last variant's model and state are gone with measure()
        if mode == "vanilla":
            base = row["ms_per_step"]
        if base:
            row["vs_vanilla"] = round(row["ms_per_step"] / base, 3)
        print(json.dumps(row), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_step", description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(SHAPES), default="minilm")
    ap.add_argument("--layers", type=int, default=None, help="the model's depth (its own by default)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--fused", choices=("both", "fused", "generic"), default="both")
    ap.add_argument("--jobs", type=int, default=1, help="processes at once on the device")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--fisher-batches", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="count launches and syncs of one step")
    ap.add_argument("--device", default="cuda", help="cuda; cpu to rehearse")
    ap.add_argument("--code", default=None, help="a folder holding another childtuning package to measure")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child or args.jobs == 1:
        return child(args)
    given = argv if argv is not None else sys.argv[1:]
    argv_child = [sys.executable, "-m", "bench.gpu_step", "--child", *given]
    procs = [subprocess.Popen(argv_child, stdout=subprocess.PIPE, text=True) for _ in range(args.jobs)]
    outs = [p.communicate()[0] for p in procs]
    rows = [json.loads(line) for out in outs for line in out.strip().splitlines() if line.startswith("{")]
    failed = sum(1 for p in procs if p.returncode)
    grouped: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["mode"], row["fused"]), []).append(row)
    base = grouped.get(("vanilla", None))
    base_ms = statistics.median(r["ms_per_step"] for r in base) if base else None
    for group in grouped.values():
        out = {**group[0], "ms_per_step": statistics.median(r["ms_per_step"] for r in group)}
        out["processes_measured"] = len(group)
        if base_ms:
            out["vs_vanilla"] = round(out["ms_per_step"] / base_ms, 3)
        print(json.dumps(out), flush=True)
    if failed:
        print(f"gpu_step: {failed} of {args.jobs} processes failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
