"""The formatter's library entry: text in, canonical text out, proven safe."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import diagnostics as dg
from ..source import SourceFile, Span
from .syntax.printer import format_module
from .syntax.parser import parse_source


@dataclass(frozen=True)
class Formatted:
    text: Optional[str]  # None when the input has errors
    diagnostics: tuple[dg.Diagnostic, ...]


def format_source(src: SourceFile) -> Formatted:
    parsed = parse_source(src)
    if parsed.module is None:
        return Formatted(None, parsed.diagnostics)
    text = format_module(parsed.module)
    # Checked on every run, not only in tests: a formatter that changed the
    # meaning of a policy would be worse than none.
    again = parse_source(SourceFile(src.path, src.name, text))
    same = again.module is not None and again.module == parsed.module \
        and [c.text for c in again.module.comments] == [c.text for c in parsed.module.comments]
    if not same:
        return Formatted(None, (dg.error(
            "E0900", Span.point(src.name), "internal error: the formatted file would not mean the same",
            "the file was left unchanged; please report this with the file attached"),))
    return Formatted(text, ())
