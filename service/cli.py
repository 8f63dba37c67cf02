"""The ``childtune`` command. The service side never imports torch: subcommands that need it
import their module only when they run."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="childtune", description="Fine-tuning with the ChildTuning family of methods."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="fine-tune a tiny model with each ChildTuning mode on CPU", add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        ap.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from childtuning.demo import main as demo_main

        return demo_main(rest)
    ap.parse_args(argv)  # reports the unknown command
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
