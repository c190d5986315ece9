"""One diagnostic type for every stage, and its human and JSON forms."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

from .source import Span

ERROR = "error"
WARNING = "warning"

# Every code the compiler emits, with a one-line summary (used by docs and tests).
CODES: dict[str, str] = {
    "E0001": "file cannot be read",
    "E0002": "file too large",
    "E0003": "file is not UTF-8 text",
    "E0010": "syntax error: unexpected token",
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
    "E0113": "invalid regular expression",
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
    "E0200": "not valid YAML",
    "E0201": "YAML policy has the wrong structure",
    "E0300": "labels line is not valid JSON",
    "E0301": "labels line has the wrong structure",
    "E0302": "unknown response type or category",
    "E0303": "missing proposition label",
    "E0304": "label out of range",
    "E0900": "internal error: formatter would change the meaning",
}


@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: str
    span: Span
    message: str
    help: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def sort_key(self):
        s = self.span
        return (s.file, s.line, s.column, self.code, self.message)


def error(code: str, span: Span, message: str, help: str = "", notes: Iterable[str] = ()) -> Diagnostic:
    return Diagnostic(code, ERROR, span, message, help, tuple(notes))


def warning(code: str, span: Span, message: str, help: str = "", notes: Iterable[str] = ()) -> Diagnostic:
    return Diagnostic(code, WARNING, span, message, help, tuple(notes))


def normalise(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by location, duplicates removed."""
    return sorted(set(diagnostics), key=Diagnostic.sort_key)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def render(d: Diagnostic, source_text: str | None) -> str:
    """`file:line:col: error[CODE]: message`, the line, a caret underline, help."""
    s = d.span
    out = [f"{s.file}:{s.line}:{s.column}: {d.severity}[{d.code}]: {d.message}"]
    lines = source_text.split("\n") if source_text is not None else []
    if 0 < s.line <= len(lines):
        text = lines[s.line - 1]
        gutter = " " * len(str(s.line))
        width = (s.end_column - s.column) if s.end_line == s.line else len(text) - s.column + 1
        width = max(1, min(width, 80))
        column = s.column
        if len(text) > 120:  # a long data line: show a window around the place
            start = max(0, column - 40)
            text = ("…" if start else "") + text[start:start + 100] + ("…" if start + 100 < len(text) else "")
            column = column - start + (1 if start else 0)
        # Tabs keep their width so the caret sits under the right character.
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: column - 1])
        out += [f"{gutter} |", f"{s.line} | {text}", f"{gutter} | {pad}{'^' * width}"]
    for note in d.notes:
        out.append(f"  = note: {note}")
    if d.help:
        out.append(f"  = help: {d.help}")
    return "\n".join(out)


def render_all(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]) -> str:
    return "\n\n".join(render(d, sources.get(d.span.file)) for d in diagnostics)


def to_json(diagnostics: Iterable[Diagnostic]) -> str:
    rows = []
    for d in diagnostics:
        row = asdict(d)
        row["notes"] = list(d.notes)
        rows.append(row)
    return json.dumps(rows, indent=2, ensure_ascii=False)


def summary(diagnostics: list[Diagnostic]) -> str:
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return ", ".join(parts)
