"""The compiler's library entry: a `.rbr` file → CompiledPolicy (and its files)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import diagnostics as dg
from .check import check_file
from .check.model import CheckedPolicy
from .codegen import generate
from ..errors import CompileError
from ..policy.compiled import CompiledPolicy
from ..policy.loading import policy_from_files


@dataclass(frozen=True)
class Compilation:
    checked: CheckedPolicy
    files: dict  # relative path -> bytes
    diagnostics: tuple[dg.Diagnostic, ...]  # warnings only
    sources: dict  # display name -> text, for rendering diagnostics


def compile_path(path) -> Compilation:
    """Check and generate; raises `CompileError` (with every diagnostic) on errors."""
    checked, diags, sources = check_file(Path(path))
    if checked is None or dg.has_errors(diags):
        raise CompileError(diags, sources)
    return Compilation(checked, generate(checked), tuple(diags), sources)


def compile_file(path) -> CompiledPolicy:
    """`rbrlang.compile_file`: the CompiledPolicy a fresh compile would load."""
    comp = compile_path(path)
    return policy_from_files(comp.files)
