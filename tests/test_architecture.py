"""The boundaries of the house check themselves: the import contract, no import cycles, one list per
concept, and ruff and mypy clean with the configuration in pyproject.toml.

The import graph is read from the source (every ``import`` statement, also those inside functions,
except under ``if typing.TYPE_CHECKING:``), so a lazy import counts as an arrow too.
"""
from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("emedge_core", "hpc_client", "nionswift_plugin")


def _modules() -> dict[str, pathlib.Path]:
    """Every module of the three packages: dotted name -> file."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING") or \
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")


def _imports(path: pathlib.Path, module: str) -> set[str]:
    """Dotted names ``module`` imports (``from a.b import c`` gives a.b.c and a.b), outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (names resolved to the modules that exist)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {target for target in _imports(path, name) if target in modules and target != name}
    return graph


def test_emedge_core_never_imports_swift() -> None:
    bad = [f"{name} imports {target}" for name, path in _modules().items() if name.startswith("emedge_core")
           for target in _imports(path, name)
           if target.split(".")[0] in ("nion", "nionswift_plugin", "nionui", "nionswift")]
    assert not bad, bad


def test_hpc_client_imports_neither_emedge_core_nor_swift() -> None:
    bad = [f"{name} imports {target}" for name, path in _modules().items() if name.startswith("hpc_client")
           for target in _imports(path, name)
           if target.split(".")[0] in ("emedge_core", "nionswift_plugin", "nion", "torch", "gpytorch")]
    assert not bad, bad


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles() -> None:
    """A package's ``__init__`` re-exporting its modules is not an arrow back into them."""
    graph = _graph()
    for name in graph:
        if _modules()[name].name == "__init__.py":
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_one_list_per_concept() -> None:
    from emedge_core.acquisition import ACQUISITIONS
    from emedge_core.choices import HPC_BACKENDS, POLICIES
    from emedge_core.instrument import instrument_factories
    from hpc_client import config

    assert POLICIES == tuple(ACQUISITIONS)
    assert HPC_BACKENDS is config.BACKENDS
    assert {"twin", "replay"} <= set(instrument_factories()), "reinstall: pip install -e ."
    for path in (ROOT / "emedge_core").rglob("*.py"):           # no second hard-coded list of them
        text = path.read_text()
        if path.name not in ("choices.py", "acquisition.py"):
            assert '"ucb", "ei", "maxvar"' not in text, path
    for path in (ROOT / "nionswift_plugin").rglob("*.py"):
        text = path.read_text()
        assert '"ucb", "ei", "maxvar"' not in text and '"local", "slurmrest", "sfapi"' not in text, path


def test_swift_starts_without_torch() -> None:
    code = ("import sys; import nionswift_plugin.emedge.extension; "
            "print(sorted(m for m in ('torch', 'gpytorch', 'emedge_core.experiment') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) is None,
                    reason="ruff is not installed (pip install -e .[test])")
def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent))
    r = subprocess.run([str(ruff), "check", "--output-format", "concise", "."], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.skipif(shutil.which("mypy", path=str(pathlib.Path(sys.executable).parent)) is None,
                    reason="mypy is not installed (pip install -e .[test])")
def test_mypy_is_clean() -> None:
    mypy = shutil.which("mypy", path=str(pathlib.Path(sys.executable).parent))
    r = subprocess.run([str(mypy)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
