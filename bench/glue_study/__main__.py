"""``python -m bench.glue_study``."""

import sys

from bench.glue_study import main

sys.exit(main())
