"""``childtune api``: serve the REST API with uvicorn.

    childtune api [--host 127.0.0.1] [--port 8000] [--workers N] [--log-level info]

Configuration comes from the environment (``service.core.settings``); an unsafe production setup
(``CHILDTUNE_ENV=production`` without real API keys) stops here with the fix in the message.

``--workers N`` (or ``CHILDTUNE_API_WORKERS``) serves the same port from N processes (uvicorn's
workers: one listening socket, the kernel hands each connection to one of them). The API keeps
no state of its own (everything is in Redis), so any process answers any request. Their request
latency histograms go to ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless the
operator sets one; emptied at start), and ``/metrics`` adds every process's samples up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from service.core import env as names

__all__ = ["main", "prepare_multiprocess_metrics"]


def prepare_multiprocess_metrics() -> Path:
    """The folder the API processes share their Prometheus samples in (set in the environment
    before any of them starts), emptied of an earlier run's files."""
    given = os.environ.get(names.PROMETHEUS_MULTIPROC_DIR)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="childtune-api-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[names.PROMETHEUS_MULTIPROC_DIR] = str(folder)
    return folder


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 64, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="childtune api", description="Run the childtune REST API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help=f"API processes behind the port (default: ${names.API_WORKERS}, else 1)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    workers = args.workers
    if workers is None:
        try:
            workers = _workers(os.environ.get(names.API_WORKERS, "1"))
        except argparse.ArgumentTypeError as exc:
            print(f"childtune api: {names.API_WORKERS}: {exc}", file=sys.stderr)
            return 2

    import uvicorn

    from service.core.settings import SettingsError, load_settings

    try:
        settings = load_settings()  # checked here, with the fix in the message
    except SettingsError as exc:
        print(f"childtune api: {exc}", file=sys.stderr)
        return 2
    common = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "timeout_graceful_shutdown": 5,
    }
    if workers == 1:
        from service.api import create_app

        uvicorn.run(create_app(settings), **common)
    else:  # each worker process builds its own app from the import string
        prepare_multiprocess_metrics()  # before any of them imports prometheus_client
        uvicorn.run("service.api.app:create_app", factory=True, workers=workers, **common)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
