"""``python -m workers.train --job-dir DIR``: one rank of a job (see ``workers.train.program``)."""

from workers.train.program import main

raise SystemExit(main())
