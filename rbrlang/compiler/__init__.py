"""The compiler's library entry points, one per authoring command:
`check_policy`, `compile_policy`, `format_policy`, `explain_target`,
`import_yaml` (and `load_target`, the policy `explain` reads). Each returns a `Result`: the value (None when there are errors), every
diagnostic, and the sources they point into; `Result.unwrap()` is the raising
form, a `CompileError` holding the same diagnostics and sources. So a caller
(the CLI, an editor, a test) handles every command the same way. The
stages' own entries return the same `Result` too: `syntax.parser.parse_source`
(the module), `fmt.format_source` (the text) and `check.check_file` (the
checked policy).

Formatting, explaining and the YAML import are imported when called: checking
and compiling need none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import SourceError
from ..policy.compiled import CompiledPolicy
from ..policy.format import POLICY_FILE
from .check import check_file
from .check.model import CheckedPolicy
from .codegen import generate
from ..policy.loading import policy_from_files
from .result import Result

__all__ = ["Result", "Compilation", "check_policy", "compile_policy", "compile_path", "compile_file",
           "format_policy", "load_target", "explain_target", "import_yaml"]


@dataclass(frozen=True)
class Compilation:
    checked: CheckedPolicy
    files: dict  # relative path -> bytes


def check_policy(path) -> Result[CheckedPolicy]:
    """Load, parse and check a policy file and what it imports."""
    return check_file(Path(path))


def compile_policy(path) -> Result[Compilation]:
    """Check, then generate the compiled folder's files (in memory)."""
    checked = check_policy(path)
    if checked.failed:
        return Result(None, checked.diagnostics, checked.sources)
    return Result(Compilation(checked.value, generate(checked.value)), checked.diagnostics, checked.sources)


def compile_path(path) -> Compilation:
    """`compile_policy(path).unwrap()`: raises `CompileError` (with every diagnostic) on errors."""
    return compile_policy(path).unwrap()


def compile_file(path) -> CompiledPolicy:
    """`rbrlang.compile_file`: the CompiledPolicy a fresh compile would load."""
    return policy_from_files(compile_path(path).files)


def format_policy(path) -> Result[str]:
    """The canonical text of a policy file; its original is in `sources`."""
    from ..source import read_source
    from .fmt import format_source

    try:
        src = read_source(Path(path))
    except SourceError as exc:
        return Result(None, tuple(exc.diagnostics), exc.sources)
    return format_source(src)


def load_target(target) -> Result[CompiledPolicy]:
    """The policy of a compiled folder (or its policy.json), or of a `.rbr`
    file compiled in memory. A compiled folder that cannot be used raises
    `PolicyError`, as `load_policy` does."""
    target = Path(target)
    if target.is_dir() or target.name == POLICY_FILE:
        from ..policy import load_policy

        return Result(load_policy(target, weights="ignore", calibration="ignore"))  # the source, not a fit
    compiled = compile_policy(target)
    if compiled.failed:
        return Result(None, compiled.diagnostics, compiled.sources)
    return Result(policy_from_files(compiled.value.files), compiled.diagnostics, compiled.sources)


def explain_target(target, tokenizer=None) -> Result[str]:
    """`rbrc explain`'s summary of a policy: `target` as `load_target` takes
    it, or a policy it loaded; `tokenizer` counts prompt sizes in its tokens."""
    from .explain import explain_policy

    policy = Result(target) if isinstance(target, CompiledPolicy) else load_target(target)
    if policy.failed:
        return Result(None, policy.diagnostics, policy.sources)
    return Result(explain_policy(policy.value, tokenizer), policy.diagnostics, policy.sources)


def import_yaml(path, policy_name: Optional[str] = None) -> Result[str]:
    """A policy in the RBR paper's YAML format as formatted `.rbr` text (see `yaml_import`)."""
    from . import yaml_import

    return yaml_import.import_yaml(path, policy_name)
