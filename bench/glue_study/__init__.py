"""The GLUE study (``docs/results.md``): ChildTuning's modes against vanilla over seeds, run as
experiments through the service, resumable across days and machines.

    python -m bench.glue_study run --tasks glue/cola,glue/sts-b --seeds 3    # runs what is missing
    python -m bench.glue_study report                                        # docs/results.md + plots

On 2 CPU cores, ``run --parallel 2`` runs two jobs at once with one thread each: 1.48x the
training steps per second of one job with two threads (``bench/cpu_sharing.py``, docs/service.md).

``run`` starts the local stack (Redis, the API, one worker: ``childtune up``'s, under
``--state``) unless ``--url`` names a running service, and submits one experiment a task from
``docs/examples/glue-study.yaml`` with the seed axis first (so every variant gets its first
seed before any gets its second) and every run already on disk excluded. Each job is written to
``docs/results/runs/<task>/<variant>__seed<seed>.json`` as soon as it finishes: a run cut short
loses only the jobs not finished. ``report`` reads those files alone, so runs made on other
machines (a GPU's rows are marked) merge by copying the files in.
"""

from __future__ import annotations

import argparse

from bench.glue_study.report import report_main
from bench.glue_study.runner import run_main
from bench.glue_study.runs import DEVICES, REPORT, RESULTS, SPEC_SET

__all__ = ["main", "report_main", "run_main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.glue_study", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the missing runs of the study through the service")
    run.add_argument(
        "--spec",
        default=str(SPEC_SET),
        help="the spec set (default docs/examples/glue-study.yaml; docs/examples/glue-study-1k.yaml is "
        "the low-resource study)",
    )
    run.add_argument("--tasks", default=None, help="comma-separated presets (default: the spec set's)")
    run.add_argument(
        "--model",
        default=None,
        help="another model than the spec set's (e.g. smollm2-135m): its runs are rows of their own",
    )
    run.add_argument(
        "--only",
        action="append",
        metavar="AXIS=V1[,V2]",
        help="run only these values of a spec-set axis, e.g. hyperparameters.learning_rate=1e-4 (repeatable)",
    )
    run.add_argument(
        "--variants", default=None, help="comma-separated variant names to run, e.g. vanilla,childtuning-d"
    )
    run.add_argument("--seeds", type=int, default=3, help="how many of the paper's seeds (default 3)")
    run.add_argument("--state", default="~/.childtune-study", help="the local stack's state folder")
    run.add_argument("--port", type=int, default=0, help="the local API's port (0: any free one)")
    run.add_argument("--url", default=None, help="a running service instead of a local stack")
    run.add_argument(
        "--keep-weights",
        action="store_true",
        help="keep each finished job's models and checkpoints in the local stack (by default they "
        "are deleted once its run file is saved: ~0.9 GB a MiniLM job)",
    )
    run.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="jobs at once (the experiment's max_parallel and the local worker's concurrency; default: "
        "the spec set's max_parallel). On 2 cores, 2 one-thread jobs make 1.48x the steps of one",
    )
    run.add_argument("--results", default=str(RESULTS))
    run.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="where the jobs run (default cpu); cuda runs are their own rows, under runs/<task>-gpu/",
    )
    run.add_argument(
        "--sequential",
        action="store_true",
        help="one task at a time, in --tasks order: the next task's experiment is submitted when no "
        "job of the open ones waits for a slot, so a run cut short leaves whole tasks",
    )
    run.add_argument(
        "--stop-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop (the local stack in order) after this long; finished runs are saved, the "
        "experiments stay open and a later run follows them",
    )
    report = sub.add_parser("report", help="write docs/results.md and its plots from the run files")
    report.add_argument("--results", default=str(RESULTS), help="the run files' folder; plots go here")
    report.add_argument("--report", default=str(REPORT), help="the Markdown file written")
    args = parser.parse_args(argv)
    return run_main(args) if args.command == "run" else report_main(args)
