"""The formatter's library entry: text in, canonical text out, proven safe."""
from __future__ import annotations

from .. import diagnostics as dg
from ..source import SourceFile, Span
from .result import Result
from .syntax.printer import format_module
from .syntax.parser import parse_source


def format_source(src: SourceFile) -> Result[str]:
    """The canonical text (None when the input has errors); the original is in `sources`."""
    parsed = parse_source(src)
    if parsed.value is None:
        return parsed  # its diagnostics and source; no value
    text = format_module(parsed.value)
    # Checked on every run, not only in tests: a formatter that changed the
    # meaning of a policy would be worse than none.
    again = parse_source(SourceFile(src.path, src.name, text))
    same = again.value is not None and again.value == parsed.value \
        and [c.text for c in again.value.comments] == [c.text for c in parsed.value.comments]
    if not same:
        return Result(None, (dg.error(
            "E0900", Span.point(src.name), "internal error: the formatted file would not mean the same",
            "the file was left unchanged; please report this with the file attached"),), parsed.sources)
    return Result(text, (), parsed.sources)
