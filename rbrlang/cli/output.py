"""How rbrc prints: diagnostics and errors (human or JSON), summaries, counts.

A run reports in one format, chosen by `rbrc --format`: `human` prints each
diagnostic on stderr as it comes (with its source line and carets); `json`
collects every diagnostic, error and warning of the run and prints them as one
JSON array on stdout when the run ends (after any results the command prints
there), one object per entry in the form `rbrc check --format json` has always
used. An error without a place has `"code": null` and `"span": null`."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .. import diagnostics as dg
from ..errors import InputError, PathError, RbrError


class _Run:
    """What one run of rbrc reports, and how."""

    def __init__(self, fmt: str = "human"):
        self.json = fmt == "json"
        self.rows: list[dict] = []


_run = _Run()  # calls from outside `main` (tests, the library) print as humans read


def begin(fmt: str) -> None:
    global _run
    _run = _Run(fmt)


def end() -> None:
    """Print the run's JSON array (in JSON mode) and go back to human output."""
    global _run
    run, _run = _run, _Run()
    if run.json:
        print(json.dumps(run.rows, indent=2, ensure_ascii=False))


def is_json() -> bool:
    return _run.json


def row(message: str, help: str = "", severity: str = dg.ERROR) -> dict:
    """The JSON object of an error or warning that has no place in a file."""
    return {"code": None, "severity": severity, "span": None, "message": message, "help": help,
            "notes": [], "related": []}


def report(diags: Sequence[dg.Diagnostic], sources: dict) -> None:
    if _run.json:
        _run.rows += [dg.to_row(dg.with_offsets(d, sources)) for d in diags]
        return
    if diags:
        print(dg.render_all(diags, sources), file=sys.stderr)
        print(f"\n{dg.summary(list(diags))}", file=sys.stderr)


def problem(human: str, message: str, help: str = "") -> None:
    """A failure that is not an exception (`fmt --check`: not formatted):
    `human` as it is printed on stderr, or its message and help as JSON."""
    if _run.json:
        _run.rows.append(row(message, help))
    else:
        print(human, file=sys.stderr)


def error(command: str, exc: RbrError, flags: Optional[dict[str, str]] = None) -> None:
    """An `RbrError` the way the user reads it: its diagnostics, or one line
    `rbrc COMMAND: error: …`. `flags` maps the API arguments an error names
    (its `params`) to the command's flags, written in their place."""
    if isinstance(exc, InputError) and exc.diagnostics:
        report([dataclasses.replace(d, message=in_flags(d.message, exc.params, flags or {}),
                                    help=in_flags(d.help, exc.params, flags or {})) for d in exc.diagnostics],
               exc.sources)
        return
    if isinstance(exc, PathError):  # the path and the cause, and its own help
        message, help = f"{exc.path}: {exc.cause}", exc.help
    else:
        message, help = str(exc), ""
    message, help = (in_flags(text, exc.params, flags or {}) for text in (message, help))
    if _run.json:
        _run.rows.append(row(message, help))
    else:
        print(f"rbrc {command}: error: {message}" + (f"; {help}" if help else ""), file=sys.stderr)


def in_flags(text: str, params: Iterable[str], flags: dict[str, str]) -> str:
    """`give `gold`` as `give --gold`: each named API argument as the flag that sets it."""
    for name in params:
        if name in flags:
            text = text.replace(f"`{name}`", flags[name])
    return text


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
        self._last: dict = {}  # the last row shown, in JSON mode
        self._fh = None
        self._at = 0  # lines read
        self._offset = 0  # characters before the next line (for the JSON form's offsets)

    def _line(self, number: int) -> tuple[int, str] | None:
        """(where line `number` begins in the file's text, its text). Lines are
        split at `\\n` and decoded one by one, as the JSONL reader does, so the
        numbers and offsets agree with the reader's (a lone `\\r` ends no line)."""
        try:
            if self._fh is None or number <= self._at:
                if self._fh is not None:
                    self._fh.close()
                self._fh, self._at, self._offset = open(self.path, "rb"), 0, 0
            start, text = None, None
            while self._at < number:
                raw = self._fh.readline()
                if not raw:
                    return None
                self._at += 1
                start, text = self._offset, raw.decode("utf-8", dg.LOSSY)
                self._offset += len(text)
            return start, text.rstrip("\r\n")
        except OSError:
            return None

    def report(self, d: dg.Diagnostic) -> None:
        self.count += 1
        if self.count > self.limit:
            return
        place = self._line(d.span.line)
        if _run.json:
            if place is not None:
                start, text = place
                d = dataclasses.replace(d, span=dg.placed(d.span, lambda n: (
                    start, start + len(text)) if n == d.span.line else None))
            self._last = dg.to_row(d)
            _run.rows.append(self._last)
            return
        source = None if place is None else "\n" * (d.span.line - 1) + place[1]
        print(dg.render(d, source) + "\n", file=sys.stderr)

    def close(self) -> None:
        if self.count > self.limit:
            more = f"… and {lines(self.count - self.limit, 'more bad')} (only the first {self.limit} shown)"
            if _run.json:
                self._last["notes"].append(more)
            else:
                print(more, file=sys.stderr)
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@contextlib.contextmanager
def plain_warnings(command: str):
    """Warnings printed as one line, `rbrc COMMAND: warning: …`, instead of
    Python's `FILE:LINE: Category: …` followed by a source line of torch's that
    means nothing to a user: rbrlang's own (`GraderWarning`, …) as they are,
    other libraries' with the library's name (`(transformers) …`), their first
    line only, each once a run (a server would print it every request). A
    progress bar on screen is kept whole (tqdm's `write`)."""
    previous = warnings.showwarning
    seen: set = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if not category.__module__.startswith("rbrlang"):
            text = text.strip().splitlines()[0] if text.strip() else category.__name__
            if (category, text) in seen:
                return
            seen.add((category, text))
            text = f"({_library(filename)}) {text}"
        if _run.json:
            _run.rows.append(row(text, severity=dg.WARNING))
            return
        text = f"rbrc {command}: warning: {text}"
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


def _library(filename: str) -> str:
    """The package a warning came from, by its file: `…/site-packages/transformers/x.py` -> transformers."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return Path(parts[parts.index(marker) + 1]).stem
    return Path(filename).stem
