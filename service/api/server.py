"""``childtune api``: serve the REST API with uvicorn.

    childtune api [--host 127.0.0.1] [--port 8000] [--log-level info]

Configuration comes from the environment (``service.core.settings``); an unsafe production setup
(``CHILDTUNE_ENV=production`` without real API keys) stops here with the fix in the message.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="childtune api", description="Run the childtune REST API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn

    from service.api import create_app
    from service.core.settings import SettingsError

    try:
        app = create_app()
    except SettingsError as exc:
        print(f"childtune api: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
