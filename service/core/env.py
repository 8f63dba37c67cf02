"""Every ``CHILDTUNE_*`` environment variable's name, defined once.

:class:`service.core.settings.Settings` parses the service's configuration from the variables named
after its fields (``CHILDTUNE_`` + the field name); the names below are those that code also
sets or reads outside it: in the environment a worker gives the launcher and the ranks, in the
local stack, in the CLI. Import the name; never spell it.
"""

from __future__ import annotations

PREFIX = "CHILDTUNE_"

# Read by Settings (the field of the same name) and set by the local stack or the worker.
ENV = PREFIX + "ENV"
REDIS_URL = PREFIX + "REDIS_URL"
ARTIFACTS = PREFIX + "ARTIFACTS"
API_KEYS = PREFIX + "API_KEYS"
QUEUES = PREFIX + "QUEUES"
MODEL_ROOTS = PREFIX + "MODEL_ROOTS"
ALLOW_HUB = PREFIX + "ALLOW_HUB"
SOFT_SHUTDOWN_S = PREFIX + "SOFT_SHUTDOWN_S"
NODE_ADDR = PREFIX + "NODE_ADDR"
# Where converted model presets are cached (workers/train/presets_llm.py; default
# ~/.cache/childtune/models).
MODEL_CACHE = PREFIX + "MODEL_CACHE"
# Webhooks (service/core/webhooks/): networks allowed although internal, and test-speed knobs.
WEBHOOK_ALLOW_NETWORKS = PREFIX + "WEBHOOK_ALLOW_NETWORKS"
WEBHOOK_RETRY_BASE_S = PREFIX + "WEBHOOK_RETRY_BASE_S"
WEBHOOK_RETRY_WINDOW_S = PREFIX + "WEBHOOK_RETRY_WINDOW_S"
WEBHOOK_TIMEOUT_S = PREFIX + "WEBHOOK_TIMEOUT_S"

# `childtune api`: the number of API processes behind its port (default 1), and where they keep
# their Prometheus samples so /metrics adds them up (prometheus_client's own variable).
API_WORKERS = PREFIX + "API_WORKERS"
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# The local state folder of `childtune up` and the CLI, and the CLI's client.
STATE = PREFIX + "STATE"
API_URL = PREFIX + "API_URL"
API_KEY = PREFIX + "API_KEY"

# Between a worker, its task and the training program.
WORKER_INSTANCE = PREFIX + "WORKER_INSTANCE"
SINKS = PREFIX + "SINKS"
DATA = PREFIX + "DATA"
# Set by the launcher of a multi-node job's node for the ranks torchrun starts (each in a session
# of its own): a rank whose torchrun dies is killed with it (workers.train.main).
DIE_WITH_TORCHRUN = PREFIX + "DIE_WITH_TORCHRUN"
FILES_DIR = PREFIX + "FILES_DIR"

# Not ours, but set and read in more than one place: a CPU job's thread budget. A worker running
# N jobs at once (`childtune worker --concurrency N`, `childtune up --concurrency N`) sets it to
# cores // N unless the operator did; the launcher splits it over a job's ranks
# (workers.launch.cpu_threads) and each rank's torch uses its share.
CPU_THREADS = "OMP_NUM_THREADS"

# Not ours either: where torch builds C++ extensions. DeepSpeed compiles its CPU shared-memory
# comm op there on a CPU job's first start (about 40 s on 2 cores, then loaded). The launcher
# points it into the job's Python environment (workers.launch.rank_env), so two environments on
# one machine (two clones, two venvs) never rebuild each other's op at every start, and
# `make setup` builds it there once (workers.launch.build_cpu_comm_op).
TORCH_EXTENSIONS = "TORCH_EXTENSIONS_DIR"
