"""One diagnostic type for every stage, the spans it points at, and its human
and JSON forms. A leaf module (it imports nothing of rbrlang), so `errors`
and `source` can both build on it without an import circle."""
from __future__ import annotations

import difflib
import json
import unicodedata
import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable, Mapping, Optional

ERROR = "error"
WARNING = "warning"

# Every code the compiler emits, with a one-line summary (used by docs and tests).
CODES: dict[str, str] = {
    "E0001": "file cannot be read",
    "E0002": "file too large",
    "E0003": "file is not UTF-8 text",
    "E0010": "syntax error: unexpected token or unknown keyword",
    "E0011": "syntax error: unexpected character",
    "E0012": "unterminated string",
    "E0013": "missing or unsupported version header",
    "E0014": "invalid escape in string",
    "E0015": "nesting too deep",
    "E0016": "unexpected end of file",
    "E0101": "name defined twice",
    "E0102": "undefined name",
    "E0103": "define cycle",
    "E0104": "unknown template variable",
    "W0105": "unused proposition",
    "E0106": "class not declared in `classes`",
    "E0107": "classes overlap",
    "E0108": "classes not exhaustive",
    "E0109": "class can never hold",
    "E0110": "route to an unknown response type",
    "E0111": "category routed twice",
    "E0112": "rank cycle",
    "E0113": "invalid regular expression, or one RE2 cannot run",
    "E0114": "imported file not found",
    "E0115": "import cycle",
    "E0116": "name of the wrong kind",
    "E0117": "invalid template",
    "E0118": "invalid grader settings",
    "E0119": "construct declared twice",
    "E0120": "proposition without a question",
    "E0121": "invalid example",
    "E0122": "construct not allowed in an imported file",
    "E0123": "missing construct",
    "E0124": "class given twice in a response",
    "E0125": "class score is not a finite number",
    "E0126": "class scores do not match the response's classes",
    "E0127": "a better class scores lower than a worse one",
    "E0130": "a class formula too large for decision diagrams",
    "E0131": "a template that fails to render",
    "E0132": "rank label that is not a class of its response type",
    "E0133": "rank puts a worse class above a better one",
    "W0134": "policy without response types",
    "E0200": "not valid YAML",
    "E0201": "YAML policy has the wrong structure",
    "E0300": "labels line is not valid JSON",
    "E0301": "labels line has the wrong structure",
    "E0302": "unknown response type or category",
    "E0303": "missing proposition label",
    "E0304": "label out of range",
    "E0305": "completion label missing or not a label of its response type",
    "E0306": "rm_score not a finite number, or missing beside lines that give one",
    "E0307": "no comparison lines",
    "W0308": "prompt that gives no comparison pair",
    "W0309": "response type with no comparison pairs",
    "E0310": "no comparison pairs at all: nothing to fit",
    "E0311": "a prompt longer than the grader's context",
    "W0313": "comparison line repeated (counted once) or labelled two ways",
    "W0314": "a given value for a `matches` proposition (its pattern decides)",
    "E0400": "policy tests: the policy they are for is not a file",
    "E0401": "policy tests: a proposition, class or response type the policy does not have",
    "E0402": "policy test without one response type, with an unrouted category, or checking nothing",
    "E0403": "policy test's conversation does not end with the assistant's completion",
    "E0404": "policy test answers a proposition twice, or has two `otherwise` lines",
    "E0405": "policy test's reward range is empty, or given twice",
    "E0406": "policy test name used twice",
    "W0407": "policy test answers a proposition its response type does not use",
    "W0408": "policy test file without tests",
    "E0409": "policy test expects two classes at once",
    "E0420": "a policy test fails",
    "E0421": "the grader disagrees with a proposition's example",
    "E0900": "internal error: formatter would change the meaning",
}


@dataclass(frozen=True)
class Span:
    """A region of one file. Lines and columns are 1-based; offsets 0-based."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    @staticmethod
    def point(file: str, line: int = 1, column: int = 1, offset: int = 0) -> "Span":
        return Span(file, line, column, line, column + 1, offset, offset + 1)


def key_span(file: str, line: int, text: str, key: str | None) -> Span:
    """In one JSON line, the place of `"key"` when it is there, else the line's start."""
    if key:
        at = text.find(json.dumps(key))
        if at >= 0:
            return Span(file, line, at + 1, line, at + 1 + len(json.dumps(key)))
    return Span(file, line, 1, line, 2)


@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: str
    span: Span
    message: str
    help: str = ""
    notes: tuple[str, ...] = field(default=())
    # Other places the message speaks of (`first declared here`), each a span
    # and its label: shown as secondary snippets and kept, positions and all,
    # in the JSON form. Notes are for what has no place.
    related: tuple[tuple[Span, str], ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def sort_key(self):
        s = self.span
        return (s.file, s.line, s.column, self.code, self.message)


def error(code: str, span: Span, message: str, help: str = "", notes: Iterable[str] = (),
          related: Iterable[tuple[Span, str]] = ()) -> Diagnostic:
    return Diagnostic(code, ERROR, span, message, help, tuple(notes), tuple(related))


def warning(code: str, span: Span, message: str, help: str = "", notes: Iterable[str] = (),
            related: Iterable[tuple[Span, str]] = ()) -> Diagnostic:
    return Diagnostic(code, WARNING, span, message, help, tuple(notes), tuple(related))


def normalise(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by location; one diagnostic per place and message (the first
    kept), so a mistake reached by two passes is reported once."""
    out, seen = [], set()
    for d in sorted(diagnostics, key=Diagnostic.sort_key):
        key = (d.span.file, d.span.line, d.span.column, d.severity, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def closest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate most like `word` (a misspelling of it), or None: the one
    fuzzy match behind every "did you mean" for names and keywords."""
    if not isinstance(word, str):  # a caller's wrong type: nothing is like it
        return None
    pool = sorted(set(candidates))
    found = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not found:  # case slips: `Question`, `IDEAL`
        lowered = {c.lower(): c for c in pool}
        found = [lowered[word.lower()]] if word.lower() in lowered else []
    return found[0] if found else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`did you mean `x`?` for the closest candidate, or ""."""
    best = closest(word, candidates)
    return f"did you mean `{best}`?" if best else ""


def json_type(value) -> str:
    """What a value is, named as JSON names it (`null`, `a number`, `a list`…):
    a message about a wrong type speaks of what the user wrote in a data line
    or a request body, not of Python's classes (`NoneType`, `dict`). A value
    no JSON holds (a tensor from a Python caller) keeps its class's name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


# How the text of a file is decoded to be shown in a diagnostic (never to be
# read as data): a byte that is not UTF-8 becomes the lone surrogate
# U+DC80 + byte, which is printed as `\x{ff}`, the byte itself; a U+FFFD in
# its place would not say which byte, nor tell it from a real U+FFFD.
LOSSY = "surrogateescape"


def _shown(ch: str, keep_tab: bool) -> str:
    """How one character is printed: control and format characters (escape
    sequences, bidirectional overrides, zero-width marks) from a source never
    reach the terminal raw; they are written as the language's `\\u{…}`, and a
    byte that is not UTF-8 (see `LOSSY`) as `\\x{…}`."""
    if ch == "\t" and keep_tab:
        return ch
    if "\udc80" <= ch <= "\udcff":
        return f"\\x{{{ord(ch) - 0xDC00:02x}}}"
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
        return f"\\u{{{ord(ch):x}}}"
    return ch


def escape_text(text: str) -> str:
    """A message, note or file name with its control characters escaped."""
    return "".join(_shown(ch, keep_tab=False) for ch in text)


def _columns(shown: str) -> int:
    """Terminal columns a printed piece takes: wide East Asian characters two,
    combining marks none."""
    width = 0
    for ch in shown:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _snippet(span: Span, text: str, gutter: int, mark: str, label: str = "") -> list[str]:
    """One source line and the marks under `span` on it (`^` for the place, `-`
    for a related one, rustc's secondary labels), then the label."""
    lo = min(max(span.column - 1, 0), len(text))
    hi = (span.end_column - 1) if span.end_line == span.line else len(text)
    hi = min(max(hi, lo + 1), lo + 80)
    head, tail = "", ""
    if len(text) > 120:  # a long data line: show a window around the place
        start = max(0, lo - 39)
        head = "…" if start else ""
        tail = "…" if start + 100 < len(text) else ""
        text, lo, hi = text[start:start + 100], lo - start, hi - start
    shown = [_shown(ch, keep_tab=True) for ch in text]
    # The marks sit under the place in the printed line: tabs keep their
    # width, escapes and wide characters count what they print.
    pad = "".join("\t" if piece == "\t" else " " * _columns(piece) for piece in [head] + shown[:lo])
    under = sum(_columns(piece) if piece != "\t" else 1 for piece in shown[lo:hi])
    marks = mark * max(1, min(under, 80)) + (f" {escape_text(label)}" if label else "")
    blank = " " * gutter
    return [f"{str(span.line).rjust(gutter)} | {head}{''.join(shown)}{tail}", f"{blank} | {pad}{marks}"]


def _line_of(span: Span, sources: Mapping[str, str]) -> Optional[str]:
    text = sources.get(span.file)
    lines = text.split("\n") if text is not None else []
    return lines[span.line - 1] if 0 < span.line <= len(lines) else None


def render(d: Diagnostic, source_text: str | None, sources: Mapping[str, str] | None = None) -> str:
    """`file:line:col: error[CODE]: message`, the line, a caret underline, then
    each related place (its line marked `-` with its label), notes, help.
    `sources` holds the text of other files related places point into."""
    s = d.span
    texts = dict(sources or {})
    if source_text is not None:
        texts[s.file] = source_text
    out = [escape_text(f"{s.file}:{s.line}:{s.column}: {d.severity}[{d.code}]: {d.message}")]
    main = _line_of(s, texts)
    places = [s] * (main is not None) + [r for r, _ in d.related if _line_of(r, texts) is not None]
    gutter = max((len(str(p.line)) for p in places), default=1)
    blank = " " * gutter
    if main is not None:
        out += [f"{blank} |"] + _snippet(s, main, gutter, "^")
    for span, label in d.related:
        where = escape_text(f"{span.file}:{span.line}:{span.column}")
        text = _line_of(span, texts)
        if text is None:  # no text to show: the place and the label on one line
            out.append(f"{blank} ::: {where}: {escape_text(label)}")
            continue
        # Another file is named; a place in the same file shows by its line number.
        out.append(f"{blank} ::: {where}" if span.file != s.file else f"{blank} |")
        out += _snippet(span, text, gutter, "-", label)
    for note in d.notes:
        out.append(f"  = note: {escape_text(note)}")
    if d.help:
        out.append(f"  = help: {escape_text(d.help)}")
    return "\n".join(out)


def render_all(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]) -> str:
    return "\n\n".join(render(d, sources.get(d.span.file), sources) for d in diagnostics)


def line_starts(text: str) -> list[int]:
    """The offset where each line of `text` begins (lines split at `\\n`, as
    every reader here numbers them)."""
    return [0, *itertools.accumulate(len(line) + 1 for line in text.split("\n"))][:-1]


def placed(span: Span, line_at: Callable[[int], Optional[tuple[int, int]]]) -> Span:
    """`span` with `start`/`end` from its lines and columns; `line_at(n)` gives
    where line n begins and ends (or None: unknown). A span built from a line
    and column alone (a data line's field, a header) has offsets 0, which no
    tool reading the JSON form can use; spans that have offsets keep them."""
    if span.start or span.end:
        return span
    first, last = line_at(span.line), line_at(span.end_line)
    if first is None:
        return span
    last = last or first
    start = min(first[0] + max(span.column - 1, 0), first[1])
    return replace(span, start=start, end=max(start, min(last[0] + max(span.end_column - 1, 0), last[1])))


def with_offsets(d: Diagnostic, sources: Mapping[str, str]) -> Diagnostic:
    """`d` with offsets in every span (its own and related ones) whose file's
    text `sources` holds: 0-based character offsets into that text."""
    index: dict[str, list[int]] = {}

    def fill(span: Span) -> Span:
        text = sources.get(span.file)
        if text is None:
            return span
        if span.file not in index:  # one pass over a file, however many diagnostics point into it
            index[span.file] = line_starts(text) + [len(text) + 1]
        starts = index[span.file]

        def line_at(n: int) -> Optional[tuple[int, int]]:
            return (starts[n - 1], starts[n] - 1) if 0 < n < len(starts) else None

        return placed(span, line_at)

    return replace(d, span=fill(d.span), related=tuple((fill(s), label) for s, label in d.related))


def to_row(d: Diagnostic) -> dict:
    """The JSON object of one diagnostic: `code`, `severity`, `span`, `message`,
    `help`, `notes`, and `related` as [{`span`, `label`}]. (Offsets a span
    lacks are filled first by `with_offsets`, where its file's text is known.)"""
    row = asdict(d)
    row["notes"] = list(d.notes)
    row["related"] = [{"span": asdict(span), "label": label} for span, label in d.related]
    return row


def to_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([to_row(d) for d in diagnostics], indent=2, ensure_ascii=False)


def summary(diagnostics: list[Diagnostic]) -> str:
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return ", ".join(parts)
