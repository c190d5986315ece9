"""`matches` patterns, run by RE2: time linear in the text, so no pattern can hang grading.

A pattern is RE2 syntax (https://github.com/google/re2/wiki/Syntax). The flags
after the closing `/` become:

    i   case-insensitive           RE2 option `case_sensitive=False`
    s   `.` also matches `\\n`      RE2 option `dot_nl=True`
    m   `^` and `$` at every line  `(?m)` in front (the binding offers no option
                                   for it outside POSIX syntax)
    x   verbose                    RE2 has none: `strip_verbose` drops whitespace
                                   and `#` comments where Python's `re.VERBOSE`
                                   does (not in a character class, an escape, a
                                   repeat count or a group's opening), so a
                                   verbose pattern means what it meant under `re`

The compiler's check and the runtime both call `compile_pattern`, so a pattern
that compiles is the pattern that runs.

Where RE2 differs from Python's `re` even without flags: `\\d \\w \\s \\b` are
ASCII; `$` without `m` matches only at the very end of the text (Python's also
matches before a final newline); `\\Z` is spelt `\\z`; `x{,n}` is literal text;
`[[:alpha:]]` is a POSIX class; no backreferences or lookaround.
"""
from __future__ import annotations

import functools
import re
from typing import Optional

import re2

from ..errors import PatternError, PolicyError

FLAGS = "imsx"
_WHITESPACE = frozenset(" \t\n\r\v\f")  # Python's re.VERBOSE whitespace (re/_parser.py)
# A group's opening as Python reads it, without skipping whitespace inside it.
_GROUP_HEAD = re.compile(r"\(\?(?:P?<[^>]*>|P=[^)]*\)|#[^)]*\)|<[=!]|[=!]|[-a-zA-Z]*[:)])")
# `{m}`, `{m,}`, `{,n}`, `{m,n}`, `{,}`: Python reads these as a repeat, any other `{` as a literal.
_REPEAT = re.compile(r"\{(?:\d+|\d*,\d*)\}")
_SHORT_OCTAL = re.compile(r"\\[0-7]{1,2}")  # RE2 reads up to three octal digits
_HEX = "0123456789abcdefABCDEF"
_OCT = "01234567"


def _escape_end(pattern: str, i: int) -> int:
    """The end of the escape starting at `pattern[i] == "\\\\"`, read as Python's
    `re` reads it (digits and hex digits belong to the escape)."""
    n = len(pattern)
    if i + 1 >= n:
        return n
    c, j = pattern[i + 1], i + 2

    def take(chars: str, most: int) -> int:
        k = j
        while k < n and k - j < most and pattern[k] in chars:
            k += 1
        return k

    if c == "x":
        if j < n and pattern[j] == "{":  # RE2's \x{10FFFF}
            close = pattern.find("}", j)
            return n if close < 0 else close + 1
        return take(_HEX, 2)
    if c in "uU":
        return take(_HEX, 4 if c == "u" else 8)
    if c in "NpP" and j < n and pattern[j] == "{":
        close = pattern.find("}", j)
        return n if close < 0 else close + 1
    if c in "pP":
        return min(j + 1, n)
    if c == "Q":  # RE2's \Q…\E: literal text, whitespace included
        close = pattern.find("\\E", j)
        return n if close < 0 else close + 2
    if c == "0":
        return take(_OCT, 2)
    if c in "123456789":
        if j < n and pattern[j] in "0123456789":
            if c in _OCT and pattern[j] in _OCT and j + 1 < n and pattern[j + 1] in _OCT:
                return j + 2  # \ooo: an octal escape
            return j + 1  # \dd: a group reference
        return j
    return j


def class_end(pattern: str, i: int) -> Optional[int]:
    """The end of the character class opened at `pattern[i] == "["`, as RE2 reads
    it: a `]` first (after an optional `^`) is a member, `[:alpha:]` is one unit."""
    n, j = len(pattern), i + 1
    if j < n and pattern[j] == "^":
        j += 1
    first = True
    while j < n:
        ch = pattern[j]
        if ch == "]" and not first:
            return j + 1
        if ch == "\\":
            j = _escape_end(pattern, j)
        elif pattern.startswith("[:", j) and ":]" in pattern[j + 2:]:
            j = pattern.index(":]", j + 2) + 2
        else:
            j += 1
        first = False
    return None  # unterminated: RE2 reports it


def strip_verbose(pattern: str) -> str:
    """The pattern without the whitespace and comments Python's `re.VERBOSE`
    ignores: outside character classes, not escaped, not inside an escape, a
    repeat count or a group's opening. Where Python reads a `{` as a literal,
    it is written `\\{` so that stripping cannot turn it into a repeat; where
    stripping would join an octal escape to a following digit (`\\0 1`),
    `(?:)` keeps them apart."""
    out: list[str] = []
    i, n = 0, len(pattern)
    octal = stripped = False  # the last piece kept is a `\\0`-style escape RE2 would extend
    while i < n:
        ch = pattern[i]
        if ch in _WHITESPACE:
            i, stripped = i + 1, True
            continue
        if ch == "#":
            end = pattern.find("\n", i)
            i, stripped = (n if end < 0 else end + 1), True
            continue
        if octal and stripped and ch in "0123456789":
            out.append("(?:)")
        if ch == "\\":
            end = _escape_end(pattern, i)
        elif ch == "[":
            end = class_end(pattern, i) or n
        elif ch == "{":
            m = _REPEAT.match(pattern, i)
            if m is None:
                out.append("\\{")
                i, octal, stripped = i + 1, False, False
                continue
            end = m.end()
        elif ch == "(":
            m = _GROUP_HEAD.match(pattern, i)
            end = m.end() if m else i + 1
        else:
            end = i + 1
        out.append(pattern[i:end])
        octal, stripped = _SHORT_OCTAL.fullmatch(pattern, i, end) is not None, False
        i = end
    return "".join(out)


def check_flags(flags: str) -> None:
    unknown = sorted(set(flags) - set(FLAGS))
    if unknown:
        raise PolicyError(f"unknown regular expression flag{'s' * (len(unknown) > 1)} "
                          f"{', '.join(unknown)}: the flags are i, m, s and x")


def re2_source(pattern: str, flags: str = "") -> str:
    """The text RE2 compiles for a pattern and its flags (`i` and `s` are options, not text)."""
    check_flags(flags)
    source = strip_verbose(pattern) if "x" in flags else pattern
    return "(?m)" + source if "m" in flags else source


@functools.lru_cache(maxsize=256)  # bounded: a process may load many policies
def compile_pattern(pattern: str, flags: str = ""):
    """The compiled RE2 regex of a `matches` pattern; `PatternError` if RE2 cannot compile it."""
    source = re2_source(pattern, flags)
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own copy of the message to stderr
    options.case_sensitive = "i" not in flags
    options.dot_nl = "s" in flags
    try:
        return re2.compile(source, options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else str(exc)
        reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        fragment = reason.split(": ", 1)[1] if ": " in reason else ""
        raise PatternError(pattern, reason, fragment) from None


def search(regex, text: str) -> bool:
    """Whether the regex matches anywhere in `text`. A lone surrogate (which a
    decoder with `errors="surrogateescape"` can leave in a completion, and no
    strict UTF-8 encoder takes) reaches RE2 as its three bytes: one character."""
    return regex.search(text.encode("utf-8", "surrogatepass")) is not None
