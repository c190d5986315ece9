"""rbrlang: Rule Based Rewards as a language.

`compile_file` runs the compiler (parser and checker); `load_policy` reads a
compiled folder and needs neither, so a trainer imports only what it uses.
"""
from __future__ import annotations

from ._version import __version__

_ERRORS = ("RbrError", "InputError", "CompileError", "DataError", "PolicyError", "ConversationError", "GraderError",
           "PathError", "UsageError")
__all__ = ["__version__", "compile_file", "load_policy", "CompiledPolicy", "import_yaml", "classify_record",
           "classify_file", *_ERRORS]


def __getattr__(name):
    # Lazy: `import rbrlang` must not pull in Lark for a trainer.
    if name == "compile_file":
        from .compiler import compile_file
        return compile_file
    if name == "import_yaml":
        from .compiler import import_yaml
        return import_yaml
    if name in ("classify_record", "classify_file"):
        from .data import classify
        return getattr(classify, name)
    if name in ("load_policy", "CompiledPolicy"):
        from . import policy
        return getattr(policy, name)
    if name in _ERRORS:
        from . import errors
        return getattr(errors, name)
    raise AttributeError(name)
