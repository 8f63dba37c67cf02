"""What every API command of the CLI shares: its parser's ``--url``/``--key`` and the way it runs.

A command builds its parser with :func:`command_parser`, adds its own arguments, and hands
:func:`run_command` a body that takes the client: an API error prints ``error: ...`` and exits 1,
Ctrl-C exits 130, and the client is closed either way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from service.cli.client import Client, ClientError

__all__ = ["command_parser", "run_command"]


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``childtune <prog>``, with ``--url`` and ``--key``."""
    p = argparse.ArgumentParser(prog=f"childtune {prog}", description=description)
    p.add_argument("--url", default=None, help="API URL (default $CHILDTUNE_API_URL, else `childtune up`'s)")
    p.add_argument("--key", default=None, help="API key (default $CHILDTUNE_API_KEY, else `childtune up`'s)")
    return p


def run_command(args: argparse.Namespace, body: Callable[[Client], int]) -> int:
    """``body``'s exit code with a client of ``args.url``/``args.key``; 1 on an API error, 130 on Ctrl-C."""
    client = Client.from_env(args.url, args.key)
    try:
        return body(client)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
