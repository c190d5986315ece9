"""One exception tree for rbrlang, under one base.

Every error a user can cause (a mistake in a policy, a data file, a compiled
folder, a path) is an `RbrError`. Errors that point into a file the user wrote
carry `Diagnostic`s, so every caller reports them the same way: located, with
the source line and a help line. The CLI maps the classes to exit codes
(`exit_code`); anything that is not an `RbrError` is a bug in rbrlang (exit 70).

    RbrError
    ├── InputError            carries diagnostics (file, line, column, help)
    │   ├── CompileError      a `.rbr` policy has errors
    │   └── DataError         a JSONL data or labels file has bad lines
    ├── PolicyError           a compiled folder that cannot be used, or a call that does not fit it
    │   └── ConversationError a conversation that is not a list of {"role", "content"} messages
    ├── GraderError           the grader cannot give a trustworthy answer
    ├── PathError             a path that cannot be read or written (one line: the path and the cause)
    └── UsageError            a command line or argument that is wrong (exit 2)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Optional

if TYPE_CHECKING:  # diagnostics -> source -> errors: imported late to keep the base importable first
    from .diagnostics import Diagnostic

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70


class RbrError(Exception):
    """The base of every error rbrlang raises on purpose."""

    exit_code = EXIT_ERRORS


class InputError(RbrError):
    """A mistake in a file the user gave, with located diagnostics."""

    def __init__(self, diagnostics: Iterable["Diagnostic"], sources: Optional[Mapping[str, str]] = None):
        from .diagnostics import normalise, render_all

        self.diagnostics: list["Diagnostic"] = normalise(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(render_all(self.diagnostics, self.sources))


class CompileError(InputError):
    """A policy with errors; raised by the compiler's library entry points."""


class DataError(InputError):
    """Bad lines in a JSONL data file."""


class PolicyError(RbrError, ValueError):
    """A compiled folder that cannot be used, or a call that does not fit it."""


class ConversationError(PolicyError):
    """A conversation that is not a list of {"role", "content"} messages."""


class GraderError(RbrError, RuntimeError):
    """The grader cannot produce a trustworthy answer (and says why)."""


class PathError(RbrError, OSError):
    """A path that cannot be read or written: names the path and the cause."""

    def __init__(self, path, cause: str, help: str = ""):
        self.path, self.cause, self.help = str(path), cause, help
        super().__init__(f"{self.path}: {cause}" + (f"; {help}" if help else ""))

    @classmethod
    def from_os(cls, path, exc: OSError, doing: str = "") -> "PathError":
        """`cannot write …: permission denied` from an OSError, without the errno noise."""
        reason = (exc.strerror or str(exc)).lower() if isinstance(exc, OSError) else str(exc)
        return cls(path, f"{doing}: {reason}" if doing else reason)


class UsageError(RbrError):
    """A command line that is wrong."""

    exit_code = EXIT_USAGE

