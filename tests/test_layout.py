"""The dependency rule of docs/ARCHITECTURE: the trainer side never imports the
compiler (Lark, dd), and the base install's commands need no torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

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
}
SHARED = {"errors", "diagnostics", "source", "files", "__init__", "__version__"}


def _imports(path: Path) -> set[str]:
    """The top-level rbrlang packages a module imports (relative or absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = path.relative_to(ROOT).with_suffix("").parts  # ("rbrlang", pkg, ..., module)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                target = list(base) + (node.module.split(".") if node.module else [])
                if len(target) == 1:  # `from .. import x`: x is a package or module of rbrlang
                    target += [alias.name for alias in node.names[:1]]
            else:
                target = (node.module or "").split(".")
            if target[:1] == ["rbrlang"] and len(target) > 1:
                found.add(target[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bits = alias.name.split(".")
                if bits[0] == "rbrlang" and len(bits) > 1:
                    found.add(bits[1])
    return found


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
        f"p = rbrlang.policy.load_policy({str(ROOT / 'compiled/safety')!r})\n"
        "import torch\n"
        "p.reward('comply', p.features('comply', torch.zeros(1, len(p.proposition_names))))\n"
        "bad = [m for m in sys.modules if m in ('lark', 'dd') or m.startswith(('lark.', 'dd.', 'rbrlang.compiler'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
