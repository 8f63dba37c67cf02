"""The ranks' environment: a CPU job's DeepSpeed finds its compiled CPU comm op inside the job's
Python environment (built once by ``make setup``), never in a folder another environment shares."""

from __future__ import annotations

import sys
from pathlib import Path

from service.core import env as names
from workers.launch import build_cpu_comm_op, extensions_dir, rank_env


def test_a_cpu_rank_builds_torch_extensions_inside_its_python_environment() -> None:
    where = extensions_dir()
    assert where == Path(sys.prefix) / "torch_extensions"  # the test venv can be written
    env = rank_env("cpu", {"PATH": "/usr/bin"})
    assert env["DS_ACCELERATOR"] == "cpu" and env[names.TORCH_EXTENSIONS] == str(where)


def test_an_operators_extensions_folder_is_kept_and_a_gpu_rank_gets_none() -> None:
    assert rank_env("cpu", {names.TORCH_EXTENSIONS: "/opt/ext"})[names.TORCH_EXTENSIONS] == "/opt/ext"
    gpu = rank_env("cuda", {})
    assert names.TORCH_EXTENSIONS not in gpu and "DS_ACCELERATOR" not in gpu


def test_the_cpu_comm_op_is_built_where_the_ranks_look() -> None:
    said = build_cpu_comm_op()
    where = extensions_dir()
    assert where is not None and said == f"DeepSpeed's CPU comm op ready in {where}", said
    built = list(where.glob("deepspeed_shm_comm*/deepspeed_shm_comm*.so"))
    assert built, sorted(p.name for p in where.rglob("*"))
