"""How rbrc prints: diagnostics (human or JSON), summaries, counts."""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Sequence

from .. import diagnostics as dg


def report(diags: Sequence[dg.Diagnostic], sources: dict, fmt: str = "human") -> None:
    if fmt == "json":
        print(dg.to_json(diags))
        return
    if diags:
        print(dg.render_all(diags, sources), file=sys.stderr)
        print(f"\n{dg.summary(list(diags))}", file=sys.stderr)


def lines(n: int, what: str = "") -> str:
    """`1 line`, `3 bad lines`."""
    return f"{n} {what + ' ' if what else ''}line{'s' * (n != 1)}"


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (library errors can run to pages)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class BadLines:
    """Prints diagnostics for bad lines of one JSONL file as they are found.

    Lines arrive in file order, so the text each one shows is read by a second,
    forward-only pass over the file: nothing is held in memory, and a file of a
    million bad lines prints the first `limit` and a count, not a flood."""

    def __init__(self, path, limit: int = 20):
        self.path, self.limit, self.count = path, limit, 0
        self._fh = None
        self._at = 0

    def _line(self, number: int) -> str | None:
        try:
            if self._fh is None or number <= self._at:
                if self._fh is not None:
                    self._fh.close()
                self._fh, self._at = open(self.path, encoding="utf-8", errors="replace"), 0
            text = None
            while self._at < number:
                text = self._fh.readline()
                self._at += 1
                if not text:
                    return None
            return text.rstrip("\n")
        except OSError:
            return None

    def report(self, d: dg.Diagnostic) -> None:
        self.count += 1
        if self.count > self.limit:
            return
        text = self._line(d.span.line)
        source = None if text is None else "\n" * (d.span.line - 1) + text
        print(dg.render(d, source) + "\n", file=sys.stderr)

    def close(self) -> None:
        if self.count > self.limit:
            print(f"… and {lines(self.count - self.limit, 'more bad')} (only the first {self.limit} shown)",
                  file=sys.stderr)
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@contextlib.contextmanager
def plain_warnings(command: str):
    """rbrlang's own warnings (`GraderWarning`, …) printed as one line,
    `rbrc COMMAND: warning: …`, instead of Python's `FILE:LINE: Category: …`
    followed by a source line of torch's that means nothing to a user. Other
    libraries' warnings keep Python's form. A progress bar on screen is kept
    whole (tqdm's `write`)."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("rbrlang"):
            return previous(message, category, filename, lineno, file, line)
        text = f"rbrc {command}: warning: {message}"
        try:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        except ImportError:
            print(text, file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
