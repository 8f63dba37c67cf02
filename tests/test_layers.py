"""The arrows between the packages point one way (``docs/architecture.md``), read from the
source: a module-level import against the arrows fails here, naming the module and the line.

- ``childtuning`` (the method) imports nothing of ours.
- ``service.core`` (the torch-free base) imports only itself, the standard library and its
  few third-party packages; never the API, the CLI, the workers, the method or torch.
- ``service.api`` stands on the base alone.
- ``service.cli`` stands on the base; the commands that train on this machine import
  ``workers``/``childtuning`` inside the function that runs them, never at module level.
- ``workers`` stands on the base and the method, never on the API or the CLI.

And no circle: the graph of our modules, counting every import (inside functions and under
``TYPE_CHECKING`` too, relative ones resolved), has no cycle.
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


def module_name(path: Path, root: Path = ROOT) -> str:
    """``service/core/store/__init__.py`` -> ``service.core.store``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = OURS) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, every import counted (at any depth: inside a
    function, under ``TYPE_CHECKING``), relative ones resolved. ``from a import b`` is an edge to
    ``a.b`` when ``b`` is a module, else to ``a``."""
    paths = {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}

    def owner(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {o for alias in node.names if (o := owner(alias.name))}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in paths else owner(base)
                    if target:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each a circle of imports),
    found by Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


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


def test_no_import_cycle_among_our_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    """A circle closed only by an import inside a function, through a package's relative import,
    is found (the check above can fail); a one-way chain is not a circle."""
    pkg = tmp_path / "service" / "core"
    pkg.mkdir(parents=True)
    (tmp_path / "service" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "contract.py").write_text("from service.core.hooks import url_problem\n")
    (pkg / "hooks.py").write_text("def url_problem():\n    from .store import Store\n")
    (pkg / "store.py").write_text("from service.core import contract\n")
    (pkg / "leaf.py").write_text("from service.core.store import Store\n")
    graph = import_graph(tmp_path, ("service",))
    assert graph["service.core.hooks"] == {"service.core.store"}
    assert cycles(graph) == [["service.core.contract", "service.core.hooks", "service.core.store"]]
    (pkg / "hooks.py").write_text("def url_problem():\n    pass\n")
    assert cycles(import_graph(tmp_path, ("service",))) == []


# The base, bottom up (docs/architecture.md): a module imports its own layer and those below.
# Every module of service.core is in one (a new module must be placed: the test says so).
BASE_LAYERS: tuple[tuple[str, ...], ...] = (
    # the job's vocabulary and contract, and leaf helpers that know nothing of a job's state
    ("env", "contract", "jobdir", "datasets", "procs", "comparison", "plots", "usecases.errors",
     "usecases.text"),
    ("records",),  # ids and record models
    ("store", "settings", "queue", "artifacts", "webhooks.guard", "webhooks.signing"),
    ("experiments", "resolve", "dispatch"),
    ("usecases", "webhooks"),  # submit/cancel, and webhook delivery
)  # fmt: skip


def layer_of(module: str, layers: tuple[tuple[str, ...], ...], prefix: str = "service.core.") -> int | None:
    """The layer of ``module`` (its longest matching entry wins), None when it has none."""
    name = module.removeprefix(prefix)
    best: tuple[int, int] | None = None
    for level, entries in enumerate(layers):
        for entry in entries:
            if (name == entry or name.startswith(entry + ".")) and (best is None or len(entry) > best[1]):
                best = (level, len(entry))
    return best[0] if best else None


def layer_violations(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    bad = []
    for module, edges in sorted(graph.items()):
        if not module.startswith("service.core.") or module == "service.core":
            continue
        level = layer_of(module, layers)
        if level is None:
            bad.append(f"{module} is in no layer of BASE_LAYERS")
            continue
        for target in sorted(edges):
            up = layer_of(target, layers) if target.startswith("service.core.") else None
            if up is not None and up > level:
                bad.append(f"{module} (layer {level}) imports {target} (layer {up})")
    return bad


def test_the_base_is_layered_bottom_up() -> None:
    assert layer_violations(import_graph(), BASE_LAYERS) == []


def test_the_layer_check_catches_an_import_upwards() -> None:
    graph = {
        "service.core.store.jobs": {"service.core.records", "service.core.experiments"},
        "service.core.records": set(),
        "service.core.experiments": {"service.core.store"},
        "service.core.newcomer": set(),
    }
    assert layer_violations(graph, BASE_LAYERS) == [
        "service.core.newcomer is in no layer of BASE_LAYERS",
        "service.core.store.jobs (layer 2) imports service.core.experiments (layer 3)",
    ]
