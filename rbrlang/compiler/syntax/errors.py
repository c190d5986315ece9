"""Lark's exceptions, rewritten as diagnostics a policy author can act on."""
from __future__ import annotations

from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from ... import diagnostics as dg
from ...source import SourceFile, Span

# Named terminals, in words. Literal terminals (keywords, punctuation) are shown
# as their text in backticks.
TOKEN_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "REGEX": "a /regular expression/",
    "ROLE": "`system`, `user`, `assistant` or `because`",
    "FUNC": "`all(`, `any(` or `none(`",
    "$END": "end of file",
}

ITEM_KEYWORDS = ("policy", "import", "grader", "template", "proposition", "define",
                 "classes", "response", "route")


def token_word(parser: Lark, terminal: str) -> str:
    if terminal in TOKEN_WORDS:
        return TOKEN_WORDS[terminal]
    for t in parser.terminals:
        if t.name == terminal and isinstance(t.pattern, PatternStr):
            return f"`{t.pattern.value}`"
    return terminal.lower()


def expected_words(parser: Lark, expected) -> str:
    words = sorted({token_word(parser, t) for t in expected})
    if len(words) > 6:
        return ", ".join(words[:6]) + ", …"
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _found(tok) -> str:
    if tok.type == "$END":
        return "end of file"
    text = str(tok)
    kind = {"STRING": "string ", "REGEX": "regular expression ", "NUMBER": "number "}.get(tok.type, "")
    if len(text) > 30 or "\n" in text:
        text = text.split("\n")[0][:27] + "…"
    return f"{kind}`{text}`"


def _item_keyword_at_line_start(src: SourceFile, tok) -> Span | None:
    line_start = src.text.rfind("\n", 0, tok.start_pos) + 1
    head = src.text[line_start:tok.start_pos]
    if head.strip() == "" and str(tok) in ITEM_KEYWORDS:
        start = tok.start_pos
    elif head.strip() in ITEM_KEYWORDS and head.strip() == head.split()[0]:
        start = line_start + (len(head) - len(head.lstrip()))
    else:
        return None
    word = src.text[start:].split(None, 1)[0]
    col = start - line_start + 1
    return Span(src.name, tok.line, col, tok.line, col + len(word), start, start + len(word))


def _help_for(expected: set[str], found) -> str:
    exp = set(expected)
    if exp == {"EQUAL"}:
        return "a class rule reads `class = expression`; join conditions with `and` or `or`"
    if "RBRACE" in exp:
        return "close the `{` block with `}`"
    if exp & {"RPAR"} and found.type != "RPAR":
        return "close the parenthesis with `)`"
    if exp == {"STRING"} or exp == {"STRING", "NAME"}:
        return 'write the text in double quotes: "like this"'
    if found.type == "NAME" and str(found) in ("and", "or", "not"):
        return "keywords cannot be used as names"
    if "NAME" in exp:
        return "names start with a letter or `_` and hold letters, digits and `_`"
    return "items are: " + ", ".join(f"`{k}`" for k in ITEM_KEYWORDS)


def to_diagnostic(exc: UnexpectedInput, parser: Lark, src: SourceFile) -> dg.Diagnostic:
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            line = src.text.count("\n") + 1
            col = len(src.text) - (src.text.rfind("\n") + 1) + 1
            span = Span(src.name, line, col, line, col + 1, len(src.text), len(src.text))
            return dg.error("E0016", span, f"unexpected end of file; expected {expected_words(parser, exc.expected)}",
                            _help_for(exc.expected, tok))
        span = Span(src.name, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)
        early = _item_keyword_at_line_start(src, tok)
        if early is not None:
            # An item keyword where the previous item was still open, either
            # seen as a keyword (a) or read as a plain name (b) by the lexer.
            word = src.text[early.start:early.end]
            expected = f"; expected {expected_words(parser, exc.expected)}" if early.start == tok.start_pos else ""
            return dg.error("E0016", early, f"the item before `{word}` is incomplete{expected}",
                            _help_for(exc.expected, tok) if expected else
                            "finish the previous item (a dangling `and`, `or`, `not`, `(` or `{`?)")
        return dg.error("E0010", span,
                        f"unexpected {_found(tok)}; expected {expected_words(parser, exc.expected)}",
                        _help_for(exc.expected, tok))
    if isinstance(exc, UnexpectedCharacters):
        ch = src.text[exc.pos_in_stream] if exc.pos_in_stream < len(src.text) else ""
        span = Span(src.name, exc.line, exc.column, exc.line, exc.column + 1,
                    exc.pos_in_stream, exc.pos_in_stream + 1)
        if ch == '"':
            triple = src.text.startswith('"""', exc.pos_in_stream)
            return dg.error("E0012", span, "unterminated string",
                            'close it with `"""`' if triple else
                            'close it with `"` on the same line; use `"""` for text over several lines')
        if ch == "/":
            return dg.error("E0011", span, "unterminated or empty regular expression",
                            "write `matches /pattern/` with the closing `/` on the same line")
        shown = repr(ch)[1:-1] if ch.isprintable() and ch != " " else f"U+{ord(ch):04X}" if ch else "?"
        allowed = sorted(exc.allowed or ())
        expected = f"; expected {expected_words(parser, allowed)}" if allowed else ""
        return dg.error("E0011", span, f"unexpected character `{shown}`{expected}",
                        "comments start with `#`; text goes in double quotes")
    assert isinstance(exc, UnexpectedEOF)
    span = Span.point(src.name, src.text.count("\n") + 1, 1, len(src.text))
    return dg.error("E0016", span, "unexpected end of file", "complete the last item")
