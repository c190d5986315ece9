"""String literals: escapes, triple-quoted dedent, and the canonical quoting."""
from __future__ import annotations

import re
import textwrap

from ...errors import EscapeError

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "0": "\0"}
_ESCAPE_RE = re.compile(r"\\(u\{[0-9A-Fa-f]{1,6}\}|.|\n)", re.S)


def _value(esc: str):
    """What an escape (without its backslash) stands for, or None: invalid."""
    if esc in _ESCAPES:
        return _ESCAPES[esc]
    if esc.startswith("u{"):
        code = int(esc[2:-1], 16)
        if code <= 0x10FFFF:
            return chr(code)
    return None


def unescape(body: str) -> str:
    def sub(m: re.Match) -> str:
        value = _value(m.group(1))
        if value is None:
            raise EscapeError(m.group(0), offset=m.start())
        return value

    return _ESCAPE_RE.sub(sub, body)


def literal_value(token: str) -> tuple[str, int]:
    """The value of a STRING token, and the offset of its body in the token.

    Triple-quoted strings drop the newline after the opening quotes and the
    whitespace-only line before the closing ones, then remove the common
    indentation, so a long prompt can be indented with the code around it.
    An invalid escape is an `EscapeError` whose offset is in the token as
    written (the dedent moves what follows it), so the caret is under it.
    """
    try:
        return _literal_value(token)
    except EscapeError as exc:
        start = 3 if token.startswith('"""') else 1
        for m in _ESCAPE_RE.finditer(token, start, len(token) - start):
            if _value(m.group(1)) is None:  # dedent removes no backslash: the same first bad escape
                raise EscapeError(m.group(0), offset=m.start()) from None
        raise


def _literal_value(token: str) -> tuple[str, int]:
    if token.startswith('"""'):
        body = token[3:-3]
        start = 3
        if body.startswith("\n"):
            body, start = body[1:], 4
        last_nl = body.rfind("\n")
        if last_nl >= 0 and body[last_nl + 1:].strip(" \t") == "":
            body = body[:last_nl]
        return unescape(textwrap.dedent(body)), start
    return unescape(token[1:-1]), 1


def quote_line(value: str) -> str:
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace("\0", "\\0")
    return f'"{out}"'


def _block_safe(value: str) -> bool:
    """Whether a value survives the triple-quoted form's dedent unchanged."""
    if "\t" in value or "\r" in value or "\0" in value:
        return False
    lines = value.split("\n")
    if any(line.strip() == "" and line != "" for line in lines):
        return False  # dedent would empty whitespace-only lines
    indents = [len(l) - len(l.lstrip(" ")) for l in lines if l.strip()]
    return not indents or min(indents) == 0


def quote(value: str, indent: str) -> str:
    """Canonical spelling: one line when the value has no newline, else a block."""
    if "\n" not in value or not _block_safe(value):
        return quote_line(value)
    escaped = value.replace("\\", "\\\\")
    # No unescaped quote may start a run of three inside a block.
    escaped = re.sub(r'"(?=")', '\\"', escaped)
    inner = indent + "  "
    lines = [(inner + line) if line else "" for line in escaped.split("\n")]
    return '"""\n' + "\n".join(lines) + "\n" + inner + '"""'
