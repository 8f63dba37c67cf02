"""Peak memory per rank of ChildTuning-D's Fisher pass and mask selection under ZeRO-3, at 1, 2, 4 ranks.

Run: ``python -m bench.fisher_memory [--ranks 1,2,4] [--batches 4] [--global-batch 8]
[--model smollm2-135m] [--max-len 128] [--no-write]``. CPU only (``DS_ACCELERATOR=cpu``, gloo).

The official ChildTuning-D code squares every gradient into a per-parameter dict, then
concatenates all N scores with ``np.append`` into ONE float32 numpy array on one host to take
``np.percentile``: N × 4 bytes there, whatever the number of GPUs. childtuning keeps each
rank's share: under ZeRO-3 rank r scores only the slice of every parameter it owns
(``childtuning.layout.Zero3Layout``) and the exact global top-k is found by all-reducing
histograms (``childtuning.selection``). This benchmark measures what that buys per rank.

For each world size W the driver starts W processes with ``torch.distributed.run`` (gloo,
``DS_ACCELERATOR=cpu``, ``cores // W`` threads each). Every rank loads the model in fp32,
builds a DeepSpeed ZeRO-3 fp32 engine with AdamW (the shape of ``workers.train.program.Run``'s
config; micro-batch ``global_batch / W``, no accumulation), takes ``--batches`` Fisher batches
of the instruct/sst-2 preset (its slice of each global batch, as ``shard_indices`` deals them;
sequences of at most ``--max-len`` tokens, longer rows dropped) and runs, separately:

1. the Fisher pass: ``childtuning.fisher.fisher_scores`` with the default D filter (p = 0.3,
   per-parameter clip 1.0, train mode) and the job's causal-lm loss (summed cross-entropy over
   completion tokens divided by the GLOBAL token count over W, the count all-reduced: the same
   gradient at any W);
2. the selection: ``ChildTuning.select_from_scores`` (exact sharded top-k, then packed bits).

Memory, per rank and phase: before the phase, ``gc.collect()`` and ``malloc_trim(0)`` hand
freed heap back to the kernel, the kernel's RSS high-water mark is reset
(``/proc/self/clear_refs`` = 5) and the baseline RSS is read (``/proc/self/statm``: resident
pages × page size). During the phase a background thread samples the RSS every ~2 ms; after
it the kernel's high-water mark (``VmHWM``) is read. The phase's peak is the larger of the two
(VmHWM is exact; the sampler also works where clear_refs is refused), and "increase" is peak
minus baseline. Caveats: RSS counts touched pages, not allocations. glibc may keep memory freed
inside the phase and hand it out again, and pages allocated but never touched do not count, so
the increase is a lower bound of what the phase allocated; freed memory glibc keeps (small
blocks, fragmentation) stays counted, so it may exceed the peak of live tensors. It is an honest
peak of resident memory, which is what runs a host out of RAM. It counts everything the phase
makes resident on the rank: activations and logits, the parameters ZeRO-3 gathers, its gradient
buffers (including pages of buffers allocated at engine set-up but first touched by the first
backward, such as the contiguous gradient bucket), gloo buffers, and the scores.
Exact accounting is reported beside it: the elements each rank scores (its fragments), the
bytes of the score tensors ``fisher_scores`` returns (numel × 4) and of the packed mask.

Checks, after the measurements: the selection is exact at every W (exactly k kept; every kept
score >= the threshold >= every dropped score, reduced over ranks); the gathered Fisher mask
(``save_masks`` then ``load_full_mask`` on rank 0) is compared with W = 1's bit by bit (hash
and number of differing elements: Fisher scores at different W differ in their last bits,
since the batch is split and gradients are reduced in another order, so an element at the
threshold may flip); and a mask selected from synthetic scores that are the same function of
each element's global position at every W (2^20 levels, so about a hundred ties per level
and the position tie-break is exercised) must be bit-identical at every W.

Output: ``docs/results/fisher-memory.json`` (every rank's raw numbers, machine info) and the
table in ``docs/results/fisher-memory.md`` (also printed). The worker role (``--worker``) is
what each rank runs; it writes ``rank<r>.json`` (one JSON line) into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
RESERVE_P = 0.3
SEED = 42
SYNTHETIC_LEVEL_BITS = 20  # synthetic scores take 2^20 values: ties at the threshold are certain


# ---------------------------------------------------------------------------------------------
# memory


def rss_bytes(fd: int | None = None) -> int:
    """Resident set size of this process (``/proc/self/statm``: resident pages × page size)."""
    text = Path("/proc/self/statm").read_text() if fd is None else os.pread(fd, 128, 0).decode()
    return int(text.split()[1]) * PAGE


def vm_hwm_bytes() -> int | None:
    """The kernel's RSS high-water mark (``VmHWM``), or None where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap back to the kernel, so a baseline is tight."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` = 5); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Context manager: baseline RSS at entry, peak RSS during the block (sampled and VmHWM)."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.baseline = 0
        self.sampled_peak = 0
        self.hwm_peak: int | None = None
        self.hwm_reset = False
        self.samples = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        assert self._fd is not None
        while not self._stop.is_set():
            self.sampled_peak = max(self.sampled_peak, rss_bytes(self._fd))
            self.samples += 1
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        release_free_memory()
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.hwm_reset = reset_hwm()
        self.baseline = self.sampled_peak = rss_bytes(self._fd)
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        assert self._thread is not None and self._fd is not None
        self._thread.join()
        self.sampled_peak = max(self.sampled_peak, rss_bytes(self._fd))
        os.close(self._fd)
        self.hwm_peak = vm_hwm_bytes() if self.hwm_reset else None

    @property
    def peak(self) -> int:
        return max(self.sampled_peak, self.hwm_peak or 0)

    def record(self) -> dict[str, Any]:
        return {
            "baseline_mib": self.baseline / MIB,
            "peak_mib": self.peak / MIB,
            "increase_mib": (self.peak - self.baseline) / MIB,
            "sampled_peak_mib": self.sampled_peak / MIB,
            "hwm_peak_mib": None if self.hwm_peak is None else self.hwm_peak / MIB,
            "hwm_reset": self.hwm_reset,
            "samples": self.samples,
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------------------------------------
# worker: one rank


def build_engine(model: Any, micro: int, world: int, zero_extra: dict[str, Any] | None = None) -> Any:
    """A ZeRO-3 fp32 DeepSpeed engine with AdamW, configured as the training program does
    (``zero_extra``: more ``zero_optimization`` settings; the program sets none)."""
    import deepspeed
    import torch

    from workers.train.plan import optimizer_groups

    optimizer = torch.optim.AdamW(optimizer_groups(model, 0.01), lr=5e-5)
    config = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro * world,
        "zero_optimization": {"stage": 3, **(zero_extra or {})},
        "gradient_clipping": 1.0,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "bf16": {"enabled": False},
        "fp16": {"enabled": False, "initial_scale_power": 16},
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def fisher_data(args: argparse.Namespace, path: str, rank: int, world: int) -> list[dict[str, Any]]:
    """This rank's slices of the first ``--batches`` global batches of instruct/sst-2."""
    from transformers import AutoTokenizer

    from service.core.contract import DatasetSpec
    from workers.train.data import encode_sft, load_splits, shard_indices

    tokenizer = AutoTokenizer.from_pretrained(path)
    wanted = args.batches * args.global_batch
    splits = load_splits(DatasetSpec(preset="instruct/sst-2", max_train_examples=2 * wanted + 16))
    rows: Any = splits.train  # instruct presets give SftRows
    data, _ = encode_sft(rows, tokenizer, args.max_len, overlong="drop", chat_template=None, source="sst-2")
    order = shard_indices(len(data), 0, SEED, rank, world, args.global_batch)
    per = args.global_batch // world
    if len(order) < args.batches * per:
        raise SystemExit(
            f"{len(data)} examples fit in {args.max_len} tokens: fewer than {args.batches} global "
            f"batches of {args.global_batch}; raise --max-len"
        )
    return [data.batch(order[i * per : (i + 1) * per]) for i in range(args.batches)]


def synthetic_scores(ct: Any) -> list[Any]:
    """Scores that are one function of the global position (the same at any W): 2^20 levels."""
    import torch

    out = []
    shift = 32 - SYNTHETIC_LEVEL_BITS
    for f in ct.fragments:
        pos = torch.arange(f.numel, dtype=torch.int64) + (ct.positions[f.param_index] + f.start)
        h = (pos * 0x9E3779B1) & 0xFFFFFFFF  # a multiplicative hash; positions < 2^31 keep it in int64
        out.append((h >> shift).to(torch.float32))
    return out


def check_exact(ct: Any, scores: list[Any], threshold: float) -> dict[str, Any]:
    """Exactly k kept, and kept scores >= threshold >= dropped scores, over all ranks."""
    import torch
    import torch.distributed as dist

    kept = torch.zeros(1, dtype=torch.float64)
    lo = torch.full((1,), float("inf"), dtype=torch.float64)
    hi = torch.full((1,), float("-inf"), dtype=torch.float64)
    for f, s in zip(ct.fragments, scores, strict=True):
        keep = ct.keep(f, 0)
        kept += int(keep.sum())
        if bool(keep.any()):
            lo = torch.minimum(lo, s[keep].min().double().reshape(1))
        if not bool(keep.all()):
            hi = torch.maximum(hi, s[~keep].max().double().reshape(1))
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(kept)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    k = round(RESERVE_P * ct.num_elements)
    ok = int(kept.item()) == k and float(hi.item()) <= threshold <= float(lo.item())
    return {
        "k": k,
        "kept": int(kept.item()),
        "min_kept": float(lo.item()),
        "max_dropped": float(hi.item()),
        "exact": ok,
    }


def gathered_mask(ct: Any, directory: Path, bits_file: Path) -> str | None:
    """Save the mask (every rank its shard); rank 0 assembles it, writes its packed bits in
    parameter order to ``bits_file`` and returns their sha256."""
    import numpy as np
    import torch.distributed as dist

    from childtuning import load_full_mask

    ct.save_masks(directory)
    if dist.get_rank() != 0:
        return None
    full = load_full_mask(directory)
    names = [ct.layout.params[i][0] for i in ct.eligible_params]
    digest = hashlib.sha256()
    with bits_file.open("wb") as fh:
        for name in names:
            packed = np.packbits(full[name].reshape(-1).numpy(), bitorder="little").tobytes()
            digest.update(packed)
            fh.write(packed)
    return digest.hexdigest()


def worker(args: argparse.Namespace) -> int:
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    t_start = time.perf_counter()
    import deepspeed
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from childtuning import ChildTuning, ChildTuningConfig
    from childtuning.fisher import fisher_scores
    from workers.train.data import IGNORE_INDEX
    from workers.train.losses import causal_lm_loss
    from workers.train.model_io import model_location

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(args.out)
    path = model_location(args.model)
    batches = fisher_data(args, path, rank, world)
    torch.manual_seed(SEED)
    t_load = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    total_params = sum(p.numel() for p in model.parameters())
    engine = build_engine(model, args.global_batch // world, world, json.loads(args.zero_extra or "{}"))
    del model
    cfg = ChildTuningConfig(mode="childtuning-d", reserve_p=RESERVE_P, fisher_num_batches=args.batches)
    ct = ChildTuning(engine, cfg)
    setup_s = time.perf_counter() - t_load
    load_peak = vm_hwm_bytes()  # before any reset: includes the full fp32 model every rank loads

    def loss_fn(model: Any, batch: dict[str, Any]) -> Any:  # Run.causal_lm_loss
        count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum().to(torch.float64).reshape(1)
        if world > 1:
            dist.all_reduce(count)
        return causal_lm_loss(model, batch, max(1.0, count.item()) / world)

    dist.barrier()
    with PeakRss() as fisher_mem:
        result = fisher_scores(
            engine,
            ct.layout,
            ct.fragments,
            batches,
            num_batches=cfg.fisher_num_batches,
            clip_norm=cfg.fisher_clip_norm,
            train_mode=cfg.fisher_train_mode,
            loss_fn=loss_fn,
        )
    scores, used = result.scores, result.used
    score_bytes = sum(s.numel() * s.element_size() for s in scores)
    dist.barrier()
    with PeakRss() as select_mem:
        extra = {"num_fisher_batches": result.used, "num_fisher_batches_skipped": result.skipped}
        summary = ct.select_from_scores(scores, extra=extra)
    dist.barrier()
    mask_bytes = ct.mask_bytes()

    # checks, after the measurements
    fisher_check = check_exact(ct, scores, float(summary["threshold"]))
    fisher_check.update(num_tied=summary["num_tied"], num_tied_kept=summary["num_tied_kept"])
    fisher_hash = gathered_mask(ct, out / "masks-fisher", out / "fisher-mask.bits")
    del scores, result
    synthetic = synthetic_scores(ct)
    syn_summary = ct.select_from_scores(synthetic)
    syn_check = check_exact(ct, synthetic, float(syn_summary["threshold"]))
    syn_check.update(num_tied=syn_summary["num_tied"], num_tied_kept=syn_summary["num_tied_kept"])
    syn_hash = gathered_mask(ct, out / "masks-synthetic", out / "synthetic-mask.bits")
    del synthetic

    elements = sum(f.numel for f in ct.fragments)
    partition = sum(int(p.ds_tensor.numel()) for _, p in ct.layout.params)
    record = {
        "rank": rank,
        "world_size": world,
        "threads": torch.get_num_threads(),
        "model_params": total_params,
        "eligible_elements": ct.num_elements,
        "eligible_params": len(ct.eligible_params),
        "fragments": len(ct.fragments),
        "elements_scored": elements,
        "zero3_partition_elements": partition,
        "score_bytes": score_bytes,
        "mask_bytes": mask_bytes,
        "bool_mask_bytes": elements,  # select_top_k's masks (one byte per element) before packing
        "fisher": fisher_mem.record(),
        "selection": select_mem.record(),
        "load_peak_mib": None if load_peak is None else load_peak / MIB,
        "setup_seconds": setup_s,
        "total_seconds": time.perf_counter() - t_start,
        "batch_shapes": [list(b["input_ids"].shape) for b in batches],
        "num_fisher_batches": used,
        "threshold": summary["threshold"],
        "num_kept": summary["num_kept"],
        "fisher_check": fisher_check,
        "fisher_mask_sha256": fisher_hash,
        "synthetic_check": syn_check,
        "synthetic_mask_sha256": syn_hash,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    return 0


# ---------------------------------------------------------------------------------------------
# driver


def run_world(world: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Launch ``world`` ranks; their records, and the launch's wall time."""
    from service.core.procs import free_port

    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(world),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "bench.fisher_memory",
        "--worker",
        "--out",
        str(out),
        "--model",
        args.model,
        "--batches",
        str(args.batches),
        "--global-batch",
        str(args.global_batch),
        "--max-len",
        str(args.max_len),
        "--zero-extra",
        args.zero_extra or "{}",
    ]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": str(max(1, cores // world)),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{world} ranks failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    records = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    records.sort(key=lambda r: r["rank"])
    if len(records) != world:
        raise RuntimeError(f"{world} ranks wrote {len(records)} records")
    return {"world_size": world, "wall_seconds": wall, "ranks": records}


def _bits(path: Path) -> Any:
    import numpy as np

    return np.frombuffer(path.read_bytes(), dtype=np.uint8)


def compare_masks(runs: list[dict[str, Any]], dirs: list[Path]) -> None:
    """Add to each run how its gathered masks compare with the first run's."""
    import numpy as np

    for which in ("fisher", "synthetic"):
        ref = _bits(dirs[0] / f"{which}-mask.bits")
        for run, d in zip(runs, dirs, strict=True):
            bits = _bits(d / f"{which}-mask.bits")
            differ = int(np.unpackbits(np.bitwise_xor(ref, bits)).sum()) if bits.shape == ref.shape else -1
            run[f"{which}_mask_sha256"] = run["ranks"][0][f"{which}_mask_sha256"]
            run[f"{which}_mask_differing_elements"] = differ
            run[f"{which}_mask_same"] = differ == 0
            run[f"{which}_exact"] = all(r[f"{which}_check"]["exact"] for r in run["ranks"])


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    ranks = run["ranks"]
    return {
        "elements_scored_max": max(r["elements_scored"] for r in ranks),
        "score_mib_max": max(r["score_bytes"] for r in ranks) / MIB,
        "mask_kib_max": max(r["mask_bytes"] for r in ranks) / 1024,
        "fisher_increase_mib_max": max(r["fisher"]["increase_mib"] for r in ranks),
        "selection_increase_mib_max": max(r["selection"]["increase_mib"] for r in ranks),
        "phase_peak_mib_max": max(max(r["fisher"]["peak_mib"], r["selection"]["peak_mib"]) for r in ranks),
        "phase_peak_mib_sum": sum(max(r["fisher"]["peak_mib"], r["selection"]["peak_mib"]) for r in ranks),
        "load_peak_mib_max": max((r["load_peak_mib"] or 0.0) for r in ranks),
        "fisher_seconds_max": max(r["fisher"]["seconds"] for r in ranks),
        "selection_seconds_max": max(r["selection"]["seconds"] for r in ranks),
    }


def _same(run: dict[str, Any], which: str, n: int) -> str:
    if run[f"{which}_mask_same"]:
        return "yes"
    d = run[f"{which}_mask_differing_elements"]
    return "no (shape)" if d < 0 else f"no: {d:,} of {n:,} differ"


def table(runs: list[dict[str, Any]]) -> str:
    n = runs[0]["ranks"][0]["eligible_elements"]
    lines = [
        "| ranks W | elements scored per rank | score bytes per rank (MiB) | Fisher pass: peak RSS "
        "increase per rank (MiB) | selection: peak RSS increase per rank (MiB) | absolute peak RSS "
        "per rank (MiB) | same Fisher mask as W=1 | selection exact; same mask from identical scores "
        "| wall time (s): launch (Fisher; selection) |",
        "|--:|--:|--:|--:|--:|--:|---|---|--:|",
    ]
    for run in runs:
        s = run["summary"]
        exact = "yes" if run["fisher_exact"] and run["synthetic_exact"] else "NO"
        lines.append(
            f"| {run['world_size']} | {s['elements_scored_max']:,} | {s['score_mib_max']:.1f} "
            f"| {s['fisher_increase_mib_max']:.0f} | {s['selection_increase_mib_max']:.0f} "
            f"| {s['phase_peak_mib_max']:.0f} | {_same(run, 'fisher', n)} "
            f"| {exact}; {_same(run, 'synthetic', n)} "
            f"| {run['wall_seconds']:.0f} ({s['fisher_seconds_max']:.1f}; {s['selection_seconds_max']:.2f}) |"
        )
    return "\n".join(lines)


def masks_note(runs: list[dict[str, Any]]) -> str:
    exact = all(r["fisher_exact"] and r["synthetic_exact"] for r in runs)
    same = all(r["synthetic_mask_same"] for r in runs)
    text = (
        "**Masks.** "
        + (
            "The selection is exact at every W (exactly k kept, every kept score ≥ the threshold ≥ "
            "every dropped score, checked over all ranks)"
            if exact
            else "The selection is NOT exact at some W (see `fisher_check` / `synthetic_check`)"
        )
        + (
            ", and from identical scores (a function of each element's global position; "
            f"{runs[0]['ranks'][0]['synthetic_check']['num_tied']:,} tied at the threshold) "
            "the gathered masks are bit-identical at every W."
            if same
            else "; from identical scores the gathered masks DIFFER between world sizes."
        )
    )
    differ = [r["fisher_mask_differing_elements"] for r in runs[1:]]
    if any(d != 0 for d in differ):
        k = runs[0]["ranks"][0]["fisher_check"]["k"]
        text += (
            f" The Fisher masks differ from W = {runs[0]['world_size']}'s in up to {max(differ):,} "
            f"elements (of k = {k:,} kept): the scores themselves differ in their last bits at "
            "another W (the global batch is split over the ranks and the gradients are reduced in "
            "another order), which moves elements that sit at the threshold."
        )
    elif differ:
        text += f" The Fisher masks are identical to W = {runs[0]['world_size']}'s."
    return text


def notes(runs: list[dict[str, Any]], info: dict[str, Any]) -> str:
    r0 = runs[0]["ranks"][0]
    n = r0["eligible_elements"]
    official = n * 4
    first, last = runs[0], runs[-1]
    fs, ls = first["summary"], last["summary"]
    w0, w1 = first["world_size"], last["world_size"]
    ratio = ls["fisher_increase_mib_max"] / max(fs["fisher_increase_mib_max"], 1e-9)
    extra = info.get("zero_extra") or {}
    zero = "ZeRO-3 with the training program's settings" if not extra else f"ZeRO-3 with {json.dumps(extra)}"
    lines = [
        f"Model `{info['model']}` ({r0['model_params']:,} parameters, fp32), {zero}, CPU/gloo; "
        f"{info['batches']} Fisher batches of {info['global_batch']} instruct/sst-2 examples "
        f"(≤ {info['max_len']} tokens), default D filter: N = {n:,} eligible elements in "
        f"{r0['eligible_params']} parameters, p = {RESERVE_P}, k = {r0['fisher_check']['k']:,}. "
        f"Machine: {info['cores']} CPU cores, torch {info['torch']}, deepspeed {info['deepspeed']}, "
        f"Python {info['python']}; the ranks share the cores and other jobs were running, so wall "
        "times are indicative only. Per-rank columns are the maximum over the ranks; the RSS "
        "increases are peak minus the RSS right before the phase, the absolute peak is the larger "
        "phase peak (see the script's docstring for the method and caveats).",
        "",
        f"**Against the official code.** It concatenates all N scores into one float32 numpy array "
        f"on one host (`np.append` per parameter, then `np.percentile`): {official:,} bytes "
        f"({official / MIB:.0f} MiB) whatever the number of GPUs, besides its per-parameter score "
        f"dict (another {official / MIB:.0f} MiB) and the transient copies np.append and "
        f"np.percentile make. Here a rank holds its ZeRO-3 share, N/W × 4 bytes: "
        f"{fs['score_mib_max']:.0f} MiB of scores at W = {w0}, {ls['score_mib_max']:.0f} MiB at "
        f"W = {w1}, and keeps the mask as packed bits ({ls['mask_kib_max']:.0f} KiB per rank at "
        f"W = {w1}).",
        "",
        f"**What falls with W.** The scores, exactly as 1/W; the selection's peak increase "
        f"({fs['selection_increase_mib_max']:.0f} → {ls['selection_increase_mib_max']:.0f} MiB: one "
        "byte per owned element for the masks before packing, plus chunked temporaries); and the "
        f"Fisher pass's peak increase, but less ({fs['fisher_increase_mib_max']:.0f} → "
        f"{ls['fisher_increase_mib_max']:.0f} MiB, ×{ratio:.2f} from W = {w0} to {w1}). Most of "
        "the Fisher pass's resident memory is not the scores but the forward and backward under "
        "ZeRO-3: buffers sized by the whole model rather than by 1/W (each rank computes the full "
        "gradient of its micro-batch, which DeepSpeed copies into a contiguous reduce bucket, "
        "`reduce_bucket_size` 5e8 elements by default, more than this model, before the "
        "reduce-scatter; parameters are gathered whole for the modules that use them, "
        "`stage3_max_live_parameters` / `stage3_max_reuse_distance`, 1e9 by default, bound how "
        "many stay gathered), activations and logits of the rank's micro-batch, and freed memory "
        "glibc keeps (`--zero-extra` and the `MALLOC_MMAP_THRESHOLD_` environment variable vary "
        "the first and the last).",
        "",
        masks_note(runs),
        "",
        f"**Per host.** Every rank loads the whole fp32 model before ZeRO-3 partitions it (no "
        f"`zero.Init`): the process peak before the Fisher pass was {fs['load_peak_mib_max']:.0f} "
        f"MiB per rank at W = {w0} and {ls['load_peak_mib_max']:.0f} MiB at W = {w1}. Here all "
        f"ranks share one machine, so its total rises with W ({fs['phase_peak_mib_sum']:.0f} MiB "
        f"summed over ranks at W = {w0}, {ls['phase_peak_mib_sum']:.0f} MiB at W = {w1}): the "
        "per-rank figures are what each host (or GPU) of a multi-host job must hold.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2,4", help="world sizes, comma-separated (default 1,2,4)")
    ap.add_argument("--batches", type=int, default=4, help="Fisher batches (default 4)")
    ap.add_argument("--global-batch", type=int, default=8, help="examples per global batch (default 8)")
    ap.add_argument("--model", default="smollm2-135m", help="a model preset or a local HF folder")
    ap.add_argument("--max-len", type=int, default=128, help="max tokens per example (longer: dropped)")
    ap.add_argument(
        "--zero-extra",
        default="",
        help="JSON object of extra zero_optimization settings (default: none, as the training program)",
    )
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per world size")
    ap.add_argument("--results", default=str(RESULTS), help="folder of fisher-memory.json and .md")
    ap.add_argument("--no-write", action="store_true", help="print the table, write nothing")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    worlds = [int(x) for x in args.ranks.split(",") if x.strip()]
    for w in worlds:
        if w < 1 or args.global_batch % w:
            ap.error(f"--global-batch {args.global_batch} must split evenly over {w} ranks")
    import deepspeed
    import torch

    info = {
        "model": args.model,
        "batches": args.batches,
        "global_batch": args.global_batch,
        "max_len": args.max_len,
        "zero_extra": json.loads(args.zero_extra or "{}"),
        "reserve_p": RESERVE_P,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "page_size": PAGE,
        "command": "python -m bench.fisher_memory " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fisher-memory-") as tmp:
        dirs = [Path(tmp, f"w{w}") for w in worlds]
        for w, d in zip(worlds, dirs, strict=True):
            print(f"[fisher_memory] {w} rank(s) ...", file=sys.stderr, flush=True)
            run = run_world(w, args, d)
            run["summary"] = summarise(run)
            runs.append(run)
            print(f"[fisher_memory] {w} rank(s): {run['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
        compare_masks(runs, dirs)
    info["total_seconds"] = time.perf_counter() - t0
    text = table(runs) + "\n\n" + notes(runs, info)
    print(text)
    if not args.no_write:
        write(Path(args.results), info, runs, text)
    return 0


def write(results: Path, info: dict[str, Any], runs: list[dict[str, Any]], text: str) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "fisher-memory.json").write_text(json.dumps({"info": info, "runs": runs}, indent=2) + "\n")
    head = (
        "# ChildTuning-D under ZeRO-3: peak memory per rank of the Fisher pass and the selection\n\n"
        f"Command: `{info['command']}` ({info['total_seconds']:.0f} s in all). "
        "Raw numbers: `fisher-memory.json`.\n\n"
    )
    (results / "fisher-memory.md").write_text(head + text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
