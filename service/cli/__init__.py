"""The ``childtune`` command: one entry point, each subcommand in its own module.

The service side never imports torch: a subcommand's module is imported only when it runs,
so ``childtune submit`` stays light and ``childtune train`` (which launches rank processes)
does not drag the API's dependencies in either.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# name -> (module:function taking argv, one-line help). The function parses its own arguments.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("service.cli.train:main", "run a job spec locally on N ranks, with a live progress bar"),
    "demo": (
        "service.cli.local_stack:demo_main",
        "start the local stack and fine-tune MiniLM on SST-2 (ChildTuning-D): accuracy before -> after",
    ),
    "up": (
        "service.cli.local_stack:up_main",
        "run Redis, the API and one worker on this machine (no Docker)",
    ),
    "api": ("service.api.server:main", "run the REST API (uvicorn)"),
    "worker": ("workers.worker:main", "run a Celery GPU worker"),
    "submit": ("service.cli.commands:submit_main", "submit a fine-tune job (flags or a spec file)"),
    "jobs": ("service.cli.commands:jobs_main", "list jobs"),
    "status": ("service.cli.commands:status_main", "show one job"),
    "watch": ("service.cli.commands:watch_main", "follow a job with live progress bars"),
    "metrics": ("service.cli.commands:metrics_main", "print a job's metrics (table or CSV)"),
    "events": ("service.cli.commands:events_main", "print a job's events"),
    "mask": ("service.cli.commands:mask_main", "show a ChildTuning-D job's child network and its audit"),
    "cancel": ("service.cli.commands:cancel_main", "cancel a job"),
    "download": ("service.cli.commands:download_main", "download a job's model or a checkpoint"),
    "files": ("service.cli.commands:files_main", "upload, list or delete dataset files"),
    "experiments": ("service.cli.experiments:experiments_main", "list experiments (grids of jobs)"),
    "experiment": (
        "service.cli.experiments:experiment_main",
        "submit, status, compare, watch, cancel or plots of an experiment",
    ),
    "method-demo": (
        "childtuning.demo:main",
        "fine-tune a tiny model with each ChildTuning mode (no service)",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: childtune COMMAND [ARGS...]",
        "",
        "Fine-tuning with the ChildTuning family of methods.",
        "",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`childtune COMMAND --help` describes a command."]
    return "\n".join(lines)


def resolve(command: str) -> Callable[[list[str]], int]:
    """The function behind a subcommand (imports its module)."""
    target, _ = COMMANDS[command]
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    func: Callable[[list[str]], int] = getattr(module, func_name)
    return func


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"childtune: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return int(resolve(command)(rest) or 0)
    except BrokenPipeError:  # `childtune ... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
