"""Root of the test suite: the repository is importable through pytest's ``pythonpath``
(``pyproject.toml``), so no test edits ``sys.path``. Tests marked ``gpu`` are skipped where no
CUDA device is visible (CI never has one)."""

from __future__ import annotations

import pytest


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
