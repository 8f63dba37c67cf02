"""The arrows between the packages point one way (``docs/architecture.md``), read from the
source: a module-level import against the arrows fails here, naming the module and the line.

- ``childtuning`` (the method) imports nothing of ours.
- ``service.core`` (the torch-free base) imports only itself, the standard library and its
  few third-party packages; never the API, the CLI, the workers, the method or torch.
- ``service.api`` stands on the base alone.
- ``service.cli`` stands on the base; the commands that train on this machine import
  ``workers``/``childtuning`` inside the function that runs them, never at module level.
- ``workers`` stands on the base and the method, never on the API or the CLI.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("service", "workers", "childtuning", "bench", "tests")
HEAVY = ("torch", "transformers", "deepspeed", "numpy", "safetensors", "triton")
BASE_THIRD_PARTY = {
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "annotated_types",
    "redis",
    "celery",
    "kombu",
    "yaml",
    "matplotlib",  # service.core.plots, imported when a plot is drawn
    "httpx",  # service.core.webhooks sends the notifications
}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    # imports under ``if TYPE_CHECKING:`` or try/except at module level count as module level
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno, id(node) in top))
    return out


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


def _violations(package: str, allowed: object, *, module_level_only: bool = False) -> list[str]:
    bad = []
    for path in _modules(package):
        for name, line, at_top in _imports(path):
            if module_level_only and not at_top:
                continue
            if not allowed(name):  # type: ignore[operator]
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def _root(name: str) -> str:
    return name.split(".")[0]


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_method_imports_nothing_of_ours() -> None:
    assert _violations("childtuning", lambda n: _root(n) not in OURS or _within(n, "childtuning")) == []


def test_the_base_imports_only_itself_the_standard_library_and_its_packages() -> None:
    def allowed(name: str) -> bool:
        if _root(name) in OURS:
            return _within(name, "service.core")
        return _root(name) in sys.stdlib_module_names or _root(name) in BASE_THIRD_PARTY

    assert _violations("service.core", allowed) == []


def test_the_api_stands_on_the_base_alone() -> None:
    def allowed(name: str) -> bool:
        if _root(name) in OURS:
            return _within(name, "service.core", "service.api")
        return _root(name) not in HEAVY

    assert _violations("service.api", allowed) == []


def test_the_cli_imports_the_workers_only_inside_the_commands_that_train() -> None:
    def allowed(name: str) -> bool:
        if _root(name) in OURS:
            return _within(name, "service.core", "service.cli")
        return _root(name) not in HEAVY

    assert _violations("service.cli", allowed, module_level_only=True) == []
    # and nothing of the API: a client talks to it over HTTP
    assert _violations("service.cli", lambda n: not _within(n, "service.api")) == []


def test_the_workers_never_import_the_api_or_the_cli() -> None:
    assert _violations("workers", lambda n: not _within(n, "service.api", "service.cli")) == []


@pytest.mark.parametrize("package", ["service.core", "service.api"])
def test_the_check_itself_catches_a_wrong_arrow(tmp_path: Path, package: str) -> None:
    """A module that imports the workers would be reported (the checks above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom workers.tasks import run_job\n")
    assert [(n, line) for n, line, _ in _imports(bad) if _root(n) in OURS] == [("workers.tasks", 2)]
