"""One exception tree for rbrlang, under one base.

Every error a user can cause (a mistake in a policy, a data file, a compiled
folder, a path) is an `RbrError`, and every such class is defined here. Errors
that point into a file the user wrote carry `Diagnostic`s, so every caller
reports them the same way: located, with the source line and a help line. They
are rendered when shown (`str`), not when raised: a caller that handles the
error pays nothing, and this module needs only the leaf `diagnostics`. The CLI
maps the classes to exit codes (`exit_code`); anything that is not an
`RbrError` is a bug in rbrlang (exit 70).

    RbrError
    ├── InputError            carries diagnostics (file, line, column, help)
    │   ├── CompileError      a `.rbr` policy has errors
    │   ├── DataError         a JSONL data or labels file has bad lines
    │   └── SourceError       a file that cannot be read as text at all
    ├── LineError             one data line whose fields do not fit (its reader locates it)
    ├── EscapeError           an invalid escape in a string literal (the parser locates it)
    ├── PolicyError           a compiled folder that cannot be used, or a call that does not fit it
    │   ├── ConversationError a conversation that is not a list of {"role", "content"} messages
    │   ├── PatternError      a `matches` pattern RE2 cannot compile
    │   └── SampleError       a trainer's sample or batch that cannot be scored
    ├── GraderError           the grader cannot give a trustworthy answer
    ├── PathError             a path that cannot be read or written (one line: the path and the cause)
    └── UsageError            a command line or argument that is wrong (exit 2)

Messages speak of the library's own arguments, never of command-line flags:
an error about arguments lists them in `params`, and writes each in the message
in backticks (`` `gold` ``); the CLI, which knows which flag sets which
argument, shows the flag there instead.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

from .diagnostics import Diagnostic, Span, error, key_span, normalise, render_all

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70
EXIT_TERMINATED = 128 + 15  # SIGTERM, as a shell reports a process it ended (Ctrl-C: 130)

LINE_SHAPE = ('a line reads {"prompt": [messages], "completion": "…" or [assistant messages], '
              '"response_type": "…" or "category": "…"}')


class RbrError(Exception):
    """The base of every error rbrlang raises on purpose.

    params: the API arguments the message names (each in backticks in it), for
    the CLI to show as the flags that set them."""

    exit_code = EXIT_ERRORS

    def __init__(self, *args, params: Iterable[str] = ()):
        super().__init__(*args)
        self.params: tuple[str, ...] = tuple(params)


class InputError(RbrError):
    """A mistake in a file the user gave, with located diagnostics (sorted,
    one per place and message) and the sources they point into."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Optional[Mapping[str, str]] = None, *,
                 params: Iterable[str] = ()):
        self.diagnostics: list[Diagnostic] = normalise(diagnostics)
        self.sources: dict[str, str] = dict(sources or {})
        super().__init__(self.diagnostics, self.sources, params=params)

    def __str__(self) -> str:
        return render_all(self.diagnostics, self.sources)


class CompileError(InputError):
    """A policy with errors; raised by the compiler's library entry points."""


class DataError(InputError):
    """Bad lines in a JSONL data file."""


class SourceError(InputError):
    """A file that cannot be read as source at all (missing, a folder, too large,
    binary, not UTF-8): one diagnostic. `text` is a lossy decoding, so the
    diagnostic can still show the line; readers of other kinds of file (YAML)
    may restate the help in their own terms."""

    def __init__(self, code: str, message: str, help: str, span: Span, text: Optional[str] = None):
        super().__init__([error(code, span, message, help)], {} if text is None else {span.file: text})
        self.args = (code, message, help, span, text)  # how it pickles
        self.text = text

    @property
    def diagnostic(self) -> Diagnostic:
        return self.diagnostics[0]

    code = property(lambda self: self.diagnostic.code)
    message = property(lambda self: self.diagnostic.message)
    help = property(lambda self: self.diagnostic.help)
    span = property(lambda self: self.diagnostic.span)


class LineError(RbrError, ValueError):
    """One data line whose fields do not fit: a diagnostic code, the message,
    the field to point the caret at (`key`) and a help line. Readers turn it
    into a located `Diagnostic` with `diagnostic`."""

    def __init__(self, code: str, message: str, key: Optional[str] = None, help: str = ""):
        super().__init__(message)
        self.code, self.message, self.key, self.help = code, message, key, help

    def diagnostic(self, file: str, line: int, text: str, help: str = LINE_SHAPE) -> Diagnostic:
        return error(self.code, key_span(file, line, text, self.key), self.message, self.help or help)


class EscapeError(RbrError, ValueError):
    """An invalid escape (`text`) in a string literal: at `offset` in the
    literal's body where the unescaping finds it, at `span` once the parser
    knows the token (it reports E0014 there)."""

    def __init__(self, text: str, offset: int = 0, span: Optional[Span] = None):
        super().__init__(text)
        self.text, self.offset, self.span = text, offset, span


class PolicyError(RbrError, ValueError):
    """A compiled folder that cannot be used, or a call that does not fit it."""


class ConversationError(PolicyError):
    """A conversation that is not a list of {"role", "content"} messages."""


class PatternError(PolicyError):
    """RE2 cannot compile a pattern. `reason` is RE2's message; `fragment` the
    part of the (verbose-stripped) pattern it names, when it names one."""

    def __init__(self, pattern: str, reason: str, fragment: str = ""):
        self.pattern, self.reason, self.fragment = pattern, reason, fragment
        super().__init__(f"invalid regular expression /{pattern}/: {reason}")


class SampleError(PolicyError):
    """A request or a batch that cannot be scored; names the sample (`index`) when one is at fault."""

    def __init__(self, index: Optional[int], message: str):
        self.index = index
        super().__init__(message if index is None else f"sample {index}: {message}")


class GraderError(RbrError, RuntimeError):
    """The grader cannot produce a trustworthy answer (and says why)."""


class PathError(RbrError, OSError):
    """A path that cannot be read or written: names the path and the cause."""

    def __init__(self, path, cause: str, help: str = "", *, params: Iterable[str] = ()):
        self.path, self.cause, self.help = str(path), cause, help
        super().__init__(f"{self.path}: {cause}" + (f"; {help}" if help else ""), params=params)

    @classmethod
    def from_os(cls, path, exc: OSError, doing: str = "") -> "PathError":
        """`cannot write …: permission denied` from an OSError, without the errno noise."""
        reason = (exc.strerror or str(exc)).lower() if isinstance(exc, OSError) else str(exc)
        return cls(path, f"{doing}: {reason}" if doing else reason)


class UsageError(RbrError):
    """A command line, or a call's arguments, that is wrong."""

    exit_code = EXIT_USAGE
