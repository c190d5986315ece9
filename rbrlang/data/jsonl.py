"""Reading JSON-lines input with located diagnostics for bad lines."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Union

from .. import diagnostics as dg
from ..source import Span


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Union[object, dg.Diagnostic]]]:
    """(line number, line text, parsed value or E0300) for each non-blank line."""
    name = str(path)
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for number, text in enumerate(fh, 1):
            text = text.rstrip("\n")
            if not text.strip():
                continue
            try:
                yield number, text, json.loads(text)
            except (json.JSONDecodeError, UnicodeEncodeError) as exc:
                col = getattr(exc, "colno", 1)
                yield number, text, dg.error("E0300", Span(name, number, col, number, col + 1),
                                             f"not valid JSON: {getattr(exc, 'msg', 'not UTF-8 text')}",
                                             "each line holds one JSON object")


def key_span(file: str, line: int, text: str, key: str | None) -> Span:
    """Point at `"key"` in the line when it is there, else at the line's start."""
    if key:
        at = text.find(json.dumps(key))
        if at >= 0:
            return Span(file, line, at + 1, line, at + 1 + len(json.dumps(key)))
    return Span(file, line, 1, line, 2)
