"""`matches` patterns: RE2 syntax, checked with the runtime's own compiler.

A pattern is valid exactly when `policy.patterns.compile_pattern` (what the
trainer runs) compiles it, so a policy that compiles never fails to load and
no pattern can hang grading. What RE2 rejects is reported at the offending
construct, with what to write instead: RE2 matches in linear time because it
has no backreferences, lookaround or atomic groups.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ...policy.patterns import PatternError, class_end, compile_pattern
from ...source import Span
from ..syntax import ast
from .context import Context

SYNTAX = "patterns use RE2 syntax (like Python's `re`, without backtracking features); escape `/` as `\\/`"
NO_LOOKAROUND = ("RE2 has no lookaround, so matching stays linear: test the parts with separate "
                 "propositions and combine them in a `define`, e.g. `has_x and not has_y`")


@dataclass(frozen=True)
class Problem:
    message: str
    help: str
    start: int  # offsets into the pattern text
    end: int


def check_regexes(ctx: Context) -> None:
    for m in ctx.of(ast.Matches):
        try:
            compile_pattern(m.pattern, m.flags)
        except PatternError as exc:
            p = explain(m.pattern, m.flags, exc.reason, exc.fragment)
            ctx.error("E0113", _pattern_span(m, p.start, p.end), p.message, p.help)


def _pattern_span(m: ast.Matches, start: int, end: int) -> Span:
    # The regex token `/pattern/flags` ends the item and holds no newline, so
    # pattern offset k sits at column (end column - token length + 1 + k).
    s = m.span
    first = s.end - len(m.flags) - len(m.pattern) - 1  # offset of the pattern's first character
    col = s.end_column - len(m.flags) - len(m.pattern) - 1
    end = max(end, start + 1)
    return Span(s.file, s.end_line, col + start, s.end_line, col + end, first + start, first + end)


def explain(pattern: str, flags: str, reason: str, fragment: str) -> Problem:
    """RE2's complaint → a located message and a hint."""
    kind = reason.split(":", 1)[0]
    whole = (0, len(pattern))
    if kind == "missing )":
        at = _structure(pattern, flags).unclosed_group
        return Problem("invalid regular expression: unclosed group `(`",
                       "close it with `)`, or write `\\(` for a literal parenthesis", *_at(at, 1, whole))
    if kind == "unexpected )":
        at = _structure(pattern, flags).unmatched_close
        return Problem("invalid regular expression: unmatched `)`",
                       "remove it, or write `\\)` for a literal parenthesis", *_at(at, 1, whole))
    if kind == "missing ]":
        at = _structure(pattern, flags).unclosed_class
        return Problem("invalid regular expression: unclosed character class `[`",
                       "close it with `]`, or write `\\[` for a literal bracket", *_at(at, 1, whole))
    last = kind == "invalid repetition size"  # in `(a{1000}){1000}` the outer count is too much
    found = _find(pattern, fragment, last)
    where = found or whole
    piece = pattern[where[0]:where[1]]
    if kind == "invalid escape sequence":
        if re.fullmatch(r"\\[1-9]", piece) or piece == "\\k":
            return Problem(f"regular expressions in `matches` cannot use backreferences (`{piece}`)",
                           "RE2 has no backreferences, so matching stays linear: match the repeated text "
                           "itself, or test it with a grader proposition", *where)
        if piece == "\\Z":
            return Problem("`\\Z` is not RE2 syntax", "write `\\z` for the end of the text", *where)
        return Problem(f"invalid regular expression: unknown escape `{piece}`",
                       "RE2 escapes are `\\d \\w \\s \\b \\pL \\x{…}` and escaped punctuation; "
                       "write other characters without `\\`", *where)
    if kind == "invalid perl operator":
        return _perl_operator(pattern, where)
    if kind == "bad repetition operator":
        if piece[-1:] == "+":
            return Problem(f"regular expressions in `matches` cannot use possessive quantifiers (`{piece}`)",
                           f"write `{piece[:-1]}`: RE2 never backtracks, so the `+` is not needed", *where)
        return Problem(f"invalid regular expression: repetition of a repetition `{piece}`",
                       "group what is repeated, e.g. `(?:a{2}){3}`, or remove the extra operator", *where)
    if kind == "no argument for repetition operator":
        return Problem(f"invalid regular expression: `{piece}` has nothing to repeat",
                       f"write `\\{piece[:1]}` for the character itself", *where)
    if kind == "invalid repetition size":
        return Problem(f"invalid regular expression: repetition count `{piece}` out of range",
                       "RE2 counts go up to 1000 (nested counts multiply), with `{min,max}` in order", *where)
    if kind in ("invalid character class range", "invalid character class"):
        return Problem(f"invalid regular expression: invalid character class `{piece}`",
                       "ranges go low to high (`a-z`); Unicode classes are `\\p{L}`, `\\p{Greek}`, …", *where)
    if kind == "invalid named capture group":
        return Problem("invalid regular expression: invalid group name",
                       "write `(?P<name>…)` with a name of letters, digits and `_`", *where)
    if kind.startswith("pattern too large"):
        return Problem("regular expression too large for RE2",
                       "simplify counted repetitions (`{n}`), which RE2 expands", *whole)
    return Problem(f"invalid regular expression: {reason}", SYNTAX, *where)


def _perl_operator(pattern: str, where: tuple[int, int]) -> Problem:
    start = where[0]
    head = pattern[start:start + 4]
    span3 = (start, min(len(pattern), start + 3))
    if head.startswith(("(?=", "(?!")):
        return Problem(f"regular expressions in `matches` cannot use lookahead (`{head[:3]}`)",
                       NO_LOOKAROUND, *span3)
    if head.startswith(("(?<=", "(?<!")):
        return Problem(f"regular expressions in `matches` cannot use lookbehind (`{head}`)",
                       NO_LOOKAROUND, start, start + 4)
    if head.startswith("(?>"):
        return Problem("regular expressions in `matches` cannot use atomic groups (`(?>`)",
                       "write `(?:`: RE2 never backtracks, so an atomic group is not needed", *span3)
    if head.startswith("(?P="):
        return Problem("regular expressions in `matches` cannot use backreferences (`(?P=`)",
                       "RE2 has no backreferences, so matching stays linear: match the repeated text itself",
                       start, start + 4)
    if head.startswith("(?#"):
        return Problem("regular expressions in `matches` cannot use `(?#…)` comments",
                       "remove the comment, or use the `x` flag and write `# comment` at the end", *span3)
    if head.startswith("(?("):
        return Problem("regular expressions in `matches` cannot use conditional groups (`(?(`)",
                       "test the cases with separate propositions and combine them in a `define`", *span3)
    flag = re.match(r"\(\?[-a-zA-Z]*", pattern[start:])
    shown = flag.group(0) if flag else head
    return Problem(f"invalid regular expression: unsupported group `{shown}`",
                   "RE2 takes the inline flags `i`, `m`, `s` and `U`; put `x` after the closing slash "
                   "(`/…/x`); groups are `(…)`, `(?:…)` and `(?P<name>…)`", start, start + len(shown))


def _find(pattern: str, fragment: str, last: bool) -> Optional[tuple[int, int]]:
    if not fragment:
        return None
    if fragment == "(?P":  # RE2 names only this much of `(?P=name)`; `(?P<name>` is fine
        m = re.search(r"\(\?P(?!<)", pattern)
        return (m.start(), m.end()) if m else None
    at = pattern.rfind(fragment) if last else pattern.find(fragment)
    return (at, at + len(fragment)) if at >= 0 else None


def _at(at: Optional[int], width: int, whole: tuple[int, int]) -> tuple[int, int]:
    return (at, at + width) if at is not None else whole


@dataclass(frozen=True)
class Structure:
    unclosed_group: Optional[int]  # the innermost `(` never closed
    unmatched_close: Optional[int]  # the first `)` with no `(`
    unclosed_class: Optional[int]  # a `[` never closed


def _structure(pattern: str, flags: str) -> Structure:
    """Brackets of a pattern, skipping escapes, `\\Q…\\E` quotes, the inside of
    character classes, and (with `x`) comments."""
    opens: list[int] = []
    unmatched = None
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if pattern.startswith("\\Q", i):
                close = pattern.find("\\E", i + 2)
                i = n if close < 0 else close + 2
            else:
                i += 2
            continue
        if ch == "#" and "x" in flags:
            break  # a comment runs to the end of the line, and patterns are one line
        if ch == "[":
            end = class_end(pattern, i)
            if end is None:
                return Structure(opens[-1] if opens else None, unmatched, i)
            i = end
            continue
        if ch == "(":
            opens.append(i)
        elif ch == ")":
            if opens:
                opens.pop()
            elif unmatched is None:
                unmatched = i
        i += 1
    return Structure(opens[-1] if opens else None, unmatched, None)

