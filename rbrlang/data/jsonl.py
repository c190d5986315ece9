"""Reading JSON input that users and clients send: JSON-lines files with
located diagnostics for bad lines, and `parse_json`, the one JSON parser for
input (the readers here, the reward server's bodies and labels).

Python's `json.loads` takes more than a record should hold, and some of it
fails later, far from the line, as an internal error: a value nested 100,000
deep (RecursionError), an integer past Python's digit limit (ValueError), a
lone UTF-16 surrogate escape (`"\\ud800"`: a `str` no tokenizer can encode);
NaN and Infinity are not JSON at all; and a key given twice in one object
keeps its last value in silence. `parse_json` refuses each with a
`JSONTextError` that says what and where (NaN and Infinity where no reader
checks the field they are in: see `finite`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Iterator, Optional, Union

from .. import diagnostics as dg
from ..diagnostics import key_span  # noqa: F401 (the readers of data lines import it from here)
from ..errors import PathError
from ..files import open_input
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


# The longest line a reader takes: far above any conversation a grader's context
# holds, and a bound on what one line can cost to parse.
MAX_LINE_BYTES = 16 << 20


class JSONTextError(ValueError):
    """JSON text that `parse_json` does not take: `message`, and `position`, the
    0-based character offset in the text where the problem is (or starts)."""

    def __init__(self, message: str, position: int = 0, length: int = 1):
        super().__init__(message)
        self.message, self.position, self.length = message, position, length


class _Refused(Exception):
    """Raised by the parse hooks; `parse_json` turns it into a located JSONTextError."""

    def __init__(self, message: str, token: str):
        self.message, self.token = message, token


def _constant(name: str):
    raise _Refused(f"`{name}` is not a JSON number", name)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # over sys.get_int_max_str_digits()
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits is more than can be read", text) from None


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:24]} is too large for a 64-bit float", text)
    return value


class _Duplicate(Exception):
    def __init__(self, key: str):
        self.key = key


def _object(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # `json.loads` keeps the last value without a word
        seen: set = set()
        raise _Duplicate(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]')


def _duplicate_at(text: str) -> tuple[int, int]:
    """Where the first key given twice in one object is given the second time
    (offset, length):
    a walk over the (valid) text's strings and brackets, a stack, no recursion."""
    stack: list = []  # per open bracket: the keys of an object so far, or None for a list
    key_next = False
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(set())
            key_next = True
        elif tok == "[":
            stack.append(None)
        elif tok in "]}":
            stack.pop()
        elif tok == ",":
            key_next = bool(stack) and stack[-1] is not None
        elif tok == ":":
            key_next = False
        elif key_next:
            key = json.loads(tok)  # `"\u0061"` and `"a"` are the same key
            if key in stack[-1]:
                return m.start(), len(tok)
            stack[-1].add(key)
            key_next = False
    return 0, 1


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# A high surrogate escape not followed by a low one, or a low one not after a high one.
_LONE_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                             r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(value) -> bool:
    stack = [value]  # iterative: the value may be nested as deep as the parser allows
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def finite_number(value) -> Optional[float]:
    """A JSON number as a float, or None where it is none: booleans, text, NaN,
    ±Infinity, and integers too large for a float (`float()` would raise
    OverflowError on them: one check here, at every field that takes a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def shown(value, width: int = 40) -> str:
    """A value as JSON for a message, cut to `width` characters (a 400-digit number stays readable)."""
    text = json.dumps(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def parse_json(text: str, finite: bool = True):
    """The value of one JSON text, or a `JSONTextError` (see the module docstring).

    An integer past Python's digit limit, nesting past the interpreter's
    recursion limit and strings with a lone surrogate are refused; with
    `finite` (strict JSON, as the server takes) so are NaN, Infinity and a
    number a float cannot hold. Without it they are floats, for readers that
    check each number at its field (and say which field). A key given twice in
    one object is refused at its second place. The rest is `json.loads`."""
    numbers = {"parse_constant": _constant, "parse_float": _float} if finite else {}
    try:
        value = json.loads(text, parse_int=_integer, object_pairs_hook=_object, **numbers)
    except json.JSONDecodeError as exc:
        raise JSONTextError(f"not valid JSON: {exc.msg}", exc.pos) from None
    except _Duplicate as exc:
        raise JSONTextError(f"the key {shown(exc.key)} is given twice in one object (the second value would "
                            "replace the first without a word); keep one", *_duplicate_at(text)) from None
    except _Refused as exc:
        raise JSONTextError(exc.message, max(0, text.find(exc.token))) from None
    except RecursionError:
        raise JSONTextError("objects and lists are nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        at = _LONE_SURROGATE.search(text)
        raise JSONTextError("a string holds a lone UTF-16 surrogate escape (half of a pair), which is not text",
                            at.start() if at else 0) from None
    return value


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Union[object, dg.Diagnostic]]]:
    """(line number, line text, parsed value or E0300) for each non-blank line.

    A path that cannot be read is a `PathError` (one line: the path and the
    cause); a line that is not UTF-8 or not JSON is an E0300 at its place."""
    name = str(path)
    path = Path(path)
    try:
        fh = open_input(path)  # never waits on a FIFO
    except IsADirectoryError:
        raise PathError(name, "is a folder", "give a JSON-lines file (one JSON object per line)") from None
    except OSError as exc:
        raise PathError.from_os(name, exc, "cannot read") from None
    with fh:
        if path.is_dir():  # some systems open folders for reading
            raise PathError(name, "is a folder", "give a JSON-lines file (one JSON object per line)")
        regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
        number = 0
        while True:
            try:
                raw = fh.readline(MAX_LINE_BYTES + 1)
            except OSError as exc:
                raise PathError.from_os(name, exc, "cannot read") from None
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                too_long = dg.error("E0300", Span(name, number, 1, number, 2),
                                    f"the line is longer than {MAX_LINE_BYTES >> 20} MiB",
                                    "each line holds one JSON object, a conversation and a completion")
                if not regular:  # a device or pipe may never end the line: stop here
                    yield number, "", dataclasses.replace(too_long, notes=("reading stopped at this line",))
                    return
                yield number, "", too_long
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a piece at a time
                    raw = fh.readline(1 << 20)
                continue
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                col = len(raw[:exc.start].decode("utf-8")) + 1
                yield number, raw.decode("utf-8", dg.LOSSY).rstrip("\r\n"), dg.error(
                    "E0300", Span(name, number, col, number, col + 1),
                    "not UTF-8 text", "save the file as UTF-8; each line holds one JSON object")
                continue
            if not text.strip():
                continue
            try:
                value = parse_json(text, finite=False)  # each reader says where a number may not be NaN
            except JSONTextError as exc:
                col = exc.position + 1
                yield number, text, dg.error("E0300", Span(name, number, col, number, col + exc.length), exc.message,
                                             "each line holds one JSON object")
            else:
                yield number, text, value


def line_texts(path, numbers) -> dict[int, str]:
    """The text of some lines of a file (1-based), read in one forward pass: for
    locating a problem found after reading (the rest of the file is not kept)."""
    wanted, out = set(numbers), {}
    if not wanted:
        return out
    last = max(wanted)
    try:
        with open(path, encoding="utf-8", errors=dg.LOSSY) as fh:
            for number, text in enumerate(fh, 1):
                if number in wanted:
                    out[number] = text.rstrip("\r\n")
                if number >= last:
                    break
    except OSError:
        pass  # the diagnostic then points at the line's start
    return out
