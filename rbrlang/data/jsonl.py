"""Reading JSON-lines input with located diagnostics for bad lines."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator, Union

from .. import diagnostics as dg
from ..diagnostics import key_span  # noqa: F401 (the readers of data lines import it from here)
from ..errors import PathError
from ..source import Span


# Bad lines a reader collects before it stops: enough to see the pattern; a
# file whose every line is wrong in the same way must not print a million.
MAX_REPORTED = 20


def stopped(diagnostics: list) -> list:
    """The bad lines of a file whose reading stopped at `MAX_REPORTED`, the last
    one saying so (its count is then a lower bound)."""
    if len(diagnostics) < MAX_REPORTED:
        return diagnostics
    last = diagnostics[-1]
    note = (f"reading stopped after {MAX_REPORTED} bad lines; lines after line {last.span.line} were not "
            "checked and may have the same mistake")
    return diagnostics[:-1] + [dataclasses.replace(last, notes=last.notes + (note,))]


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Union[object, dg.Diagnostic]]]:
    """(line number, line text, parsed value or E0300) for each non-blank line.

    A path that cannot be read is a `PathError` (one line: the path and the
    cause); a line that is not UTF-8 or not JSON is an E0300 at its place."""
    name = str(path)
    path = Path(path)
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise PathError(name, "is a folder", "give a JSON-lines file (one JSON object per line)") from None
    except OSError as exc:
        raise PathError.from_os(name, exc, "cannot read") from None
    with fh:
        if path.is_dir():  # some systems open folders for reading
            raise PathError(name, "is a folder", "give a JSON-lines file (one JSON object per line)")
        number = 0
        while True:
            try:
                raw = fh.readline()
            except OSError as exc:
                raise PathError.from_os(name, exc, "cannot read") from None
            if not raw:
                return
            number += 1
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                col = len(raw[:exc.start].decode("utf-8", "replace")) + 1
                yield number, raw.decode("utf-8", "replace").rstrip("\r\n"), dg.error(
                    "E0300", Span(name, number, col, number, col + 1),
                    "not UTF-8 text", "save the file as UTF-8; each line holds one JSON object")
                continue
            if not text.strip():
                continue
            try:
                yield number, text, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, text, dg.error("E0300", Span(name, number, exc.colno, number, exc.colno + 1),
                                             f"not valid JSON: {exc.msg}", "each line holds one JSON object")


def line_texts(path, numbers) -> dict[int, str]:
    """The text of some lines of a file (1-based), read in one forward pass: for
    locating a problem found after reading (the rest of the file is not kept)."""
    wanted, out = set(numbers), {}
    if not wanted:
        return out
    last = max(wanted)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, text in enumerate(fh, 1):
                if number in wanted:
                    out[number] = text.rstrip("\r\n")
                if number >= last:
                    break
    except OSError:
        pass  # the diagnostic then points at the line's start
    return out
