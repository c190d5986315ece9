"""The dependency rule of docs/ARCHITECTURE: the trainer side never imports the
compiler (Lark, dd), and the base install's commands need no torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.files import ROOT, SAFETY

PACKAGE = ROOT / "rbrlang"
# Which rbrlang packages each may import (besides errors, diagnostics, source).
ALLOWED = {
    "policy": set(),
    "runtime": {"policy"},
    "data": {"policy"},
    "rewards": {"policy", "runtime", "data"},
    "fit": {"policy", "data", "runtime"},
    "evaluate": {"policy", "data", "runtime", "rewards"},
    "integrations": {"policy", "runtime", "data", "rewards"},
    "serve": {"policy", "runtime", "data", "rewards", "integrations"},
    "compiler": {"policy"},
    "lsp": {"compiler", "policy"},  # the language server: authoring side, over the compiler
    "generate": {"runtime"},
    "synth": {"policy", "data", "generate", "compiler"},
}
SHARED = {"errors", "diagnostics", "source", "files", "__init__", "_version"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    target: str  # the rbrlang module it loads (a package means its __init__)
    line: int
    deferred: bool  # in a TYPE_CHECKING block (never run): see test_no_import_circles


def _rbrlang_imports(path: Path) -> list[Import]:
    """Every import of an rbrlang module in a file, relative or absolute, resolved to a module name."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, deferred):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    visit_one(stmt, True)
                for stmt in child.orelse:
                    visit_one(stmt, deferred)
            else:
                visit_one(child, deferred)

    def visit_one(node, deferred):
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, node.lineno, deferred) for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from .. import x`: x may be a module, or a name in the package
                target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                if target in MODULES:
                    found.append(Import(target, node.lineno, deferred))
        visit(node, deferred)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _imports(path: Path) -> set[str]:
    """The top-level rbrlang packages a module imports (`__init__` for rbrlang's own)."""
    return {(i.target.split(".") + ["__init__"])[1] for i in _rbrlang_imports(path)}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_rule_allows(package):
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for name in _imports(path) - SHARED - {package}:
            if name not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)} imports rbrlang.{name}")
    assert not bad, "\n".join(bad)


def test_trainer_side_imports_neither_lark_nor_dd():
    code = (
        "import sys\n"
        "import rbrlang.policy, rbrlang.runtime, rbrlang.rewards, rbrlang.data.comparisons, rbrlang.fit\n"
        "import rbrlang.integrations.trl, rbrlang.integrations.verl\n"
        f"p = rbrlang.policy.load_policy({str(SAFETY)!r})\n"
        "import torch\n"
        "p.reward('comply', p.features('comply', torch.zeros(1, len(p.proposition_names))))\n"
        "bad = [m for m in sys.modules if m in ('lark', 'dd') or m.startswith(('lark.', 'dd.', 'rbrlang.compiler'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# Import circles that remain, each as the set of modules in it. The test fails
# when one grows, when a new one appears, and when one is gone (then delete
# its line here, so that it cannot come back unnoticed).
KNOWN_CIRCLES: list[set[str]] = []  # none: the errors consolidation removed the last one


def _import_graph() -> dict[str, dict[str, str]]:
    """module -> {module it imports: "file:line" of the import}.

    Imports inside functions count. They run later than top-level ones, so a
    circle through one does not fail at import time today, but it is still
    two modules that need each other: it breaks as soon as someone moves the
    import up (or calls the function while the other module is loading), and
    it hides which of the two is the lower layer. Deferring an import is for
    optional third-party engines and start-up cost, which need no circle.
    A package's lazy `__getattr__` (PEP 562 re-exports, rbrlang/__init__.py)
    counts too: a part that reads a name from its facade (`from .. import
    __version__`) while the facade imports it is the same circle. Not
    counted: `if TYPE_CHECKING:` blocks (never run). Importing `a.b.c` also
    loads `a.b`'s `__init__` (and `a`'s) unless the importer is inside `a.b`
    (then it is already loading)."""
    graph: dict[str, dict[str, str]] = {m: {} for m in MODULES}
    for module, path in MODULES.items():
        where = path.relative_to(ROOT)
        for imp in _rbrlang_imports(path):
            if imp.deferred:
                continue
            parts = imp.target.split(".")
            for k in range(1, len(parts) + 1):
                loaded = ".".join(parts[:k])
                inside = module == loaded or module.startswith(loaded + ".")
                if loaded != module and (loaded == imp.target or not inside):
                    graph[module].setdefault(loaded, f"{where}:{imp.line}")
    return graph


def _circles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _path(graph, component) -> str:
    """One circle through the component's first module, each step with the import that makes it."""
    start, members = component[0], set(component)
    previous = {start: None}
    queue = [start]
    while queue:  # breadth first, back to `start`
        v = queue.pop(0)
        for w, where in graph[v].items():
            if w == start:
                steps, node = [f"{v} -> {start} ({where})"], v
                while previous[node] is not None:
                    before, at = previous[node]
                    steps.insert(0, f"{before} -> {node} ({at})")
                    node = before
                return "\n  ".join(steps)
            if w in members and w not in previous:
                previous[w] = (v, where)
                queue.append(w)
    raise AssertionError(f"no circle through {start}")


def test_no_import_circles():
    graph = _import_graph()
    circles = _circles(graph)
    new = [c for c in circles if set(c) not in KNOWN_CIRCLES]
    gone = [sorted(k) for k in KNOWN_CIRCLES if sorted(k) not in circles]
    assert not new, "import circles between rbrlang modules:\n" + "\n".join(
        f"- {', '.join(c)}:\n  {_path(graph, c)}" for c in new)
    assert not gone, f"these circles are gone; remove them from KNOWN_CIRCLES: {gone}"


def test_the_circle_check_finds_a_circle_through_a_deferred_import():
    """The graph and the search, on a circle as the grader loader used to make
    (a function in base.py importing a backend that imports base.py)."""
    graph = {"a.base": {"a.hf": "base.py:9"}, "a.hf": {"a.base": "hf.py:3", "a.batching": "hf.py:4"},
             "a.batching": {}}
    assert _circles(graph) == [["a.base", "a.hf"]]
    assert _path(graph, ["a.base", "a.hf"]) == "a.base -> a.hf (base.py:9)\n  a.hf -> a.base (hf.py:3)"


def test_the_circle_check_reads_lazy_re_exports_and_imports_of_the_package_itself():
    """The circle rbrlang/__init__'s `__getattr__` -> compiler -> codegen ->
    `from ... import __version__` (back to rbrlang) was invisible: the lazy
    re-exports were not read, and an import of the top package itself made no
    edge. Both count now; the version lives in the leaf `_version`."""
    graph = _import_graph()
    assert {"rbrlang.compiler", "rbrlang.policy", "rbrlang.errors", "rbrlang.data.classify"} <= set(graph["rbrlang"])
    assert "rbrlang._version" in graph["rbrlang.compiler.codegen.policy_json"]
    assert not [m for m, targets in graph.items() if "rbrlang" in targets], "a module imports the rbrlang facade"


def test_the_version_is_the_one_pyproject_declares():
    import tomllib

    from rbrlang._version import __version__
    assert tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"] == __version__
