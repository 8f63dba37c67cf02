"""``python -m bench.glue_study run``: the study's missing runs as experiments through the service,
each finished job saved as a run file at once, resumable across stops, days and machines."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.glue_study.runs import (
    DEVICES,
    ROOT,
    SEED_AXIS,
    restrict_axes,
    setting_of,
    study_parts,
    variant_of,
    with_model,
)
from service.cli.client import Client, ClientError
from service.core.contract.vocabulary import FINAL_STATUSES
from service.core.experiments import matches
from service.core.jobdir import BEST_DIR, CHECKPOINTS_DIR, MODEL_DIR


def _experiment(
    study: dict[str, Any],
    task: str,
    seeds: list[int],
    results: Path,
    parallel: int | None = None,
    device: str = "cpu",
    variants: list[str] | None = None,
) -> dict[str, Any] | None:
    """The task's experiment spec on ``device``, excluding the runs already on disk for that
    device and the variants not in ``variants`` (None: all); None when no run is left."""
    parts = study_parts(study)
    spec = json.loads(json.dumps(study["experiment"]))
    if parallel is not None:
        spec["max_parallel"] = parallel
    spec["base"].setdefault("resources", {})["device"] = device
    spec["name"] = f"GLUE study: {task}" + (f"-{parts.scope}" if parts.scope else "")
    spec["base"]["dataset"] = {"preset": task, **(study.get("dataset") or {})}
    spec["axes"] = {SEED_AXIS: seeds, **spec["axes"]}
    exclude = list(spec.get("exclude", []))
    todo = 0
    baseline = spec.get("baseline") or {}
    baseline_left = not baseline
    paths = list(spec["axes"])
    for combo in itertools.product(*(spec["axes"][p] for p in paths)):
        values = dict(zip(paths, combo, strict=True))
        if any(matches(values, entry) for entry in exclude):
            continue
        on_disk = parts.run_file(results, task, values, device).is_file()
        if on_disk or (variants is not None and variant_of(values, parts.recipe) not in variants):
            exclude.append(values)
        else:
            todo += 1
            baseline_left = baseline_left or matches(values, baseline)
    spec["exclude"] = exclude
    if not baseline_left:
        # Every baseline run is on disk: the experiment compares nothing itself (the report
        # compares the run files), and the API refuses a baseline that names no cell.
        spec.pop("baseline", None)
    return spec if todo else None


def _layer_fractions(mask: dict[str, Any]) -> dict[str, float] | None:
    """ChildTuning-D's kept fraction per layer (embeddings, layer.N, head) from its mask summary."""
    params = (mask.get("summary") or mask).get("params") or {}
    if not params or mask.get("mode", (mask.get("summary") or {}).get("mode")) != "childtuning-d":
        return None
    kept: dict[str, list[int]] = {}
    for name, info in params.items():
        match = re.search(r"layer\.(\d+)\.", name)
        group = f"layer {int(match.group(1))}" if match else "embeddings" if "embeddings" in name else "head"
        acc = kept.setdefault(group, [0, 0])
        acc[0] += int(info.get("kept") or 0)
        acc[1] += int(info.get("numel") or 0)
    return {g: k / n for g, (k, n) in kept.items() if n}


def run_time(events: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> float:
    """The seconds a job's processes ran, summed over its attempts.

    An attempt begins at its ``preparing`` phase event (its ``started`` event when it has none)
    and ends at the attempt's last record, event or metric: a job stopped with the study and
    resumed later counts the time each attempt ran, redone steps included, but not the hours
    between them (which ``finished_at - started_at`` would).
    """
    starts = sorted(
        float(e["time"]) for e in events if e.get("type") == "phase" and e.get("phase") == "preparing"
    ) or sorted(float(e["time"]) for e in events if e.get("type") == "started")
    times = [float(r["time"]) for r in [*events, *metrics] if r.get("time") is not None]
    if not starts or not times:
        return 0.0
    total = 0.0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else math.inf
        last = max((t for t in times if start <= t < end), default=start)
        total += last - start
    return round(total, 1)


def _save_run(
    client: Client,
    exp: dict[str, Any],
    job: dict[str, Any],
    task: str,
    results: Path,
    study: dict[str, Any] | None = None,
) -> Path | None:
    parts = study_parts(study)
    variant = variant_of(job["values"], parts.recipe)
    setting = setting_of(job["values"], parts.setting_axes)
    record = client.get_job(job["id"])
    if record["status"] != "succeeded":
        name = f"{variant}{f' {setting}' if setting else ''} seed {job['values'][SEED_AXIS]}"
        print(f"  {job['id']} {name}: {record['status']} ({record.get('error')}); not saved", flush=True)
        return None
    metrics = client.all_records(job["id"], "metrics")
    events = client.all_records(job["id"], "events")
    evals = [r for r in metrics if r["kind"] == "eval"]
    final = record["final_metrics"] or {}
    main = str(final.get("main_metric") or "")
    spec = record["spec"]
    device, threads, gpu = "cpu", None, None
    for event in events:
        if event.get("type") == "started" and event.get("device"):
            device, threads, gpu = str(event["device"]), event.get("cpu_threads"), event.get("gpu")
    peaks = [float(r["gpu_peak_memory_mib"]) for r in metrics if r.get("gpu_peak_memory_mib") is not None]
    mask = None
    if spec["childtuning"]["mode"] == "childtuning-d":
        try:
            mask = client.mask(job["id"])
        except ClientError:
            mask = None
    run = {
        "task": task,
        "scope": parts.scope or None,
        "model": spec["model"],
        "model_tag": parts.model_tag or None,
        "setting": setting,
        "dataset": {k: v for k, v in spec["dataset"].items() if v is not None},
        "variant": variant,
        "seed": int(job["values"][SEED_AXIS]),
        "values": job["values"],
        "metric": main,
        "final": final.get(main),
        "final_metrics": {k: v for k, v in final.items() if k.startswith("eval_")},
        "best": (record["best_metrics"] or {}).get(main),
        "curve": [[r["step"], r[main]] for r in evals if main in r],
        "steps": record["progress"]["total_steps"],
        "seconds": run_time(events, metrics),
        "attempts": record["attempts"],  # the store's count: one per worker that took the job
        "device": device,
        "cpu_threads": threads,
        "gpu": gpu,
        "gpu_peak_memory_mib": round(max(peaks), 1) if peaks else None,
        "jobs_at_once": exp.get("max_parallel"),
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "date": time.strftime("%Y-%m-%d", time.gmtime(record["finished_at"] or time.time())),
        "recipe": spec.get("recipe"),
        "hyperparameters": spec["hyperparameters"],
        "reserve_p": spec["childtuning"]["reserve_p"],
        "layer_kept_fraction": _layer_fractions(mask) if mask else None,
        "job_id": job["id"],
        "experiment_id": exp["id"],
    }
    path = parts.run_file(results, task, job["values"], device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run, indent=1) + "\n")
    tmp.replace(path)
    print(f"  saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
          f"{main} {run['final']:.4f} in {run['seconds']:.0f} s", flush=True)  # fmt: skip
    return path


def free_weights(job_dir: Path) -> int:
    """Delete a finished job's weights (its final and best models and its checkpoints: about 0.9 GB
    a MiniLM job, 5 GB a SmolLM2 one) once its run file is saved; its records, predictions and
    masks stay. The bytes freed."""
    freed = 0
    for name in (MODEL_DIR, BEST_DIR, CHECKPOINTS_DIR):
        for folder in job_dir.glob(f"{name}*"):  # with a killed write's leftover (best.tmp)
            if folder.is_dir() and not folder.is_symlink():
                freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                shutil.rmtree(folder)
    return freed


def _follow(
    client: Client,
    experiments: dict[str, str],
    results: Path,
    submit_next: Callable[[], tuple[str, str] | None] | None = None,
    deadline: float | None = None,
    poll_s: float = 10.0,
    study: dict[str, Any] | None = None,
    on_saved: Callable[[str], None] | None = None,
) -> bool:
    """Save each finished job of the tasks' experiments until every experiment is finished.

    ``submit_next`` (``run --sequential``) submits the next task's experiment, called whenever no
    open experiment has a job left queued (held back by ``max_parallel`` or waiting for a worker):
    the worker's slots stay full, and tasks finish in order. Returns False when ``deadline``
    (``time.monotonic()``) passed first. ``on_saved`` gets the id of each job whose run is saved.
    """
    saved: set[str] = set()
    last = ""
    open_ = dict(experiments)
    parts = study_parts(study)
    while True:
        lines = []
        idle = True  # no open experiment has a queued job
        for task, exp_id in list(open_.items()):
            exp = client.get_experiment(exp_id)
            idle = idle and not any(j["status"] == "queued" for j in exp["jobs"])
            for job in exp["jobs"]:
                if job["status"] in FINAL_STATUSES and job["id"] not in saved:
                    try:
                        if _save_run(client, exp, job, task, results, study) and on_saved is not None:
                            on_saved(job["id"])
                    except (ClientError, OSError, LookupError, TypeError, ValueError) as exc:
                        # One run's odd record must not stop the study: the next poll tries again.
                        print(f"  {job['id']}: not saved ({type(exc).__name__}: {exc}); retrying", flush=True)
                        continue
                    saved.add(job["id"])
            running = [j for j in exp["jobs"] if j["status"] == "running"]
            lines.append(
                f"{task}: {exp['counts']}"
                + "".join(
                    f" | {variant_of(j['values'], parts.recipe)} "
                    f"{setting_of(j['values'], parts.setting_axes)} seed {j['values'][SEED_AXIS]} "
                    f"step {j['step']}/{j['total_steps']}"
                    for j in running
                )
            )
            if exp["status"] in FINAL_STATUSES:
                print(f"{task}: experiment {exp_id} {exp['status']}", flush=True)
                del open_[task]
        line = "\n".join(lines)
        if line != last:
            print(line, flush=True)
            last = line
        if idle and submit_next is not None:
            added = submit_next()
            if added is not None:
                open_[added[0]] = added[1]
                continue
        if not open_:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            print(f"glue_study: --stop-after reached; {len(saved)} runs saved this time", flush=True)
            return False
        time.sleep(poll_s)


def _parse_only(items: list[str]) -> dict[str, list[Any]]:
    """``--only hyperparameters.learning_rate=1e-4,2e-4`` -> {path: [1e-4, 2e-4]} (YAML values)."""
    only: dict[str, list[Any]] = {}
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or not path or not values:
            raise ValueError(
                f"--only {item!r}: give AXIS=VALUE[,VALUE...], e.g. hyperparameters.learning_rate=1e-4"
            )
        parsed = [yaml.safe_load(v) for v in values.split(",")]
        # YAML reads 1e-4 as a string (it wants 1.0e-4): numbers are numbers here
        only[path] = [_as_number(v) for v in parsed]
    return only


def _as_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def run_main(args: argparse.Namespace) -> int:
    study = with_model(yaml.safe_load(Path(args.spec).read_text()), args.model)
    try:
        study = restrict_axes(study, _parse_only(args.only or []))
    except ValueError as exc:
        print(f"glue_study: {exc}", file=sys.stderr)
        return 2
    variants = args.variants.split(",") if args.variants else None
    tasks = args.tasks.split(",") if args.tasks else study["tasks"]
    seeds = [int(s) for s in study["seeds"]][: args.seeds]
    results = Path(args.results)
    state = Path(args.state).expanduser().resolve()
    parallel = int(args.parallel or study["experiment"].get("max_parallel") or 1)
    device = str(args.device)
    if parallel < 1:
        print(f"glue_study: --parallel must be >= 1 (got {parallel})", file=sys.stderr)
        return 2
    if device not in DEVICES:
        print(f"glue_study: --device must be one of {', '.join(DEVICES)} (got {device!r})", file=sys.stderr)
        return 2
    deadline = None if args.stop_after is None else time.monotonic() + float(args.stop_after)
    stack = None
    weights: Path | None = None  # the local stack's job folders, whose weights go once saved

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # through `finally`: the local stack stops in order

    signal.signal(signal.SIGTERM, on_term)
    if args.url:
        client = Client.from_env(args.url)
    else:
        from service.cli.local_stack import Stack, local_artifacts
        from service.core.procs import free_port

        stack = Stack(state, port=args.port or free_port(), concurrency=parallel)
        stack.start()
        client = Client(stack.url, (state / "api-key").read_text().strip())
        if not args.keep_weights:  # a study of 100+ runs would fill the disk with them
            weights = local_artifacts(state).jobs
    # The experiments this runner opened (and has not seen finish), by task and device: a run
    # stopped and started again follows them instead of submitting their jobs twice.
    open_file = state / "study-open.json"
    opened: dict[str, str] = json.loads(open_file.read_text()) if open_file.is_file() else {}

    parts = study_parts(study)
    scope = (f"-{parts.scope}" if parts.scope else "") + (f"[{parts.model_tag}]" if parts.model_tag else "")

    def key(task: str) -> str:
        return task + scope if device == "cpu" else f"{task}{scope}@{device}"

    def save_opened() -> None:
        state.mkdir(parents=True, exist_ok=True)
        open_file.write_text(json.dumps(opened) + "\n")

    def submit(task: str) -> str | None:
        opened.pop(key(task), None)
        spec = _experiment(study, task, seeds, results, parallel, device, variants)
        if spec is None:
            print(f"{task}: every run is on disk already", flush=True)
            return None
        exp_id = str(client.submit_experiment(spec)["id"])
        opened[key(task)] = exp_id
        save_opened()
        print(f"{task}: experiment {exp_id} submitted", flush=True)
        return exp_id

    following: dict[str, str] = {}
    to_submit: list[str] = []
    try:
        for task in tasks:  # resume the experiments of an earlier run first
            exp_id = opened.get(key(task))
            if exp_id is not None:
                try:
                    found = client.get_experiment(exp_id)
                    if found["status"] in FINAL_STATUSES:
                        exp_id = None
                    elif found.get("max_parallel") != parallel:
                        # Its finished runs are on disk; the rest go into a new experiment.
                        print(
                            f"{task}: experiment {exp_id} runs {found.get('max_parallel')} at once, not "
                            f"{parallel}: cancelling it and submitting its unfinished runs again",
                            flush=True,
                        )
                        client.cancel_experiment(exp_id)
                        exp_id = None
                except ClientError:
                    exp_id = None
            if exp_id is None:
                to_submit.append(task)
            else:
                following[task] = exp_id
                print(f"{task}: following experiment {exp_id} of an earlier run", flush=True)

        def submit_next() -> tuple[str, str] | None:
            while to_submit:
                task = to_submit.pop(0)
                exp_id = submit(task)
                if exp_id is not None:
                    return task, exp_id
            return None

        if not args.sequential:  # every task's experiment at once: the slots stay full to the last run
            while (added := submit_next()) is not None:
                following[added[0]] = added[1]
        on_saved = None
        if weights is not None:

            def on_saved(job_id: str) -> None:
                freed = free_weights(weights / job_id)
                print(f"  {job_id}: weights deleted, {freed / 2**30:.2f} GiB (--keep-weights keeps them)")

        finished = _follow(
            client, following, results, submit_next if args.sequential else None, deadline,
            study=study, on_saved=on_saved,
        )  # fmt: skip
        if finished:
            for task in tasks:
                opened.pop(key(task), None)
            save_opened()
    finally:
        if stack is not None:
            stack.stop()
    return 0
