"""Root of the test suite: the repository is importable through pytest's ``pythonpath``
(``pyproject.toml``), so no test edits ``sys.path``. Tests marked ``gpu`` are skipped where no
CUDA device is visible (CI never has one). DeepSpeed ranks that tests start themselves (not
through the launcher) build and find DeepSpeed's CPU comm op where the launcher's ranks do."""

from __future__ import annotations

import os

import pytest

from service.core import env as names
from workers.launch import extensions_dir

_extensions = extensions_dir()
if _extensions is not None:
    os.environ.setdefault(names.TORCH_EXTENSIONS, str(_extensions))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)
