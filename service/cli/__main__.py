"""``python -m service.cli``: the ``childtune`` command."""

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
