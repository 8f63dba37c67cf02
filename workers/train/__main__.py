"""``python -m workers.train --job-dir DIR``: one rank of a job (see ``workers.train.main``)."""

from workers.train.main import main

raise SystemExit(main())
