"""Lark's exceptions, rewritten as diagnostics a policy author can act on."""
from __future__ import annotations

import re

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
    "SCORE": "a number",
    "STRING": "a string",
    "REGEX": "a /regular expression/",
    "ROLE": "`system`, `user`, `assistant` or `because`",
    "FUNC": "`all(`, `any(` or `none(`",
    "$END": "end of file",
}

ITEM_KEYWORDS = ("policy", "import", "grader", "template", "proposition", "define",
                 "classes", "response", "route")
# Lines of a response that start with a keyword rather than a class name.
RESPONSE_KEYWORDS = ("rank", "features", "scores")
OPERATORS = ("AND", "OR", "NOT")


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


def _item_keyword_at_line_start(src: SourceFile, tok, expected) -> Span | None:
    line_start = src.text.rfind("\n", 0, tok.start_pos) + 1
    head = src.text[line_start:tok.start_pos]
    if head.strip() == "" and str(tok) in ITEM_KEYWORDS:
        start = tok.start_pos
    elif head.strip() in ITEM_KEYWORDS and head.strip() == head.split()[0] and set(expected) != {"NAME"}:
        # (Where only a name may follow, the keyword was read as one.)
        start = line_start + (len(head) - len(head.lstrip()))
    else:
        return None
    word = src.text[start:].split(None, 1)[0]
    col = start - line_start + 1
    return Span(src.name, tok.line, col, tok.line, col + len(word), start, start + len(word))


def keywords(parser: Lark, expected) -> list[str]:
    """The keywords (not punctuation) among the expected terminals."""
    out = []
    for t in parser.terminals:
        if t.name in expected and isinstance(t.pattern, PatternStr) and t.pattern.value.isalpha():
            out.append(t.pattern.value)
    return out


def _help_for(expected: set[str], found) -> str:
    exp = set(expected)
    if exp == {"EQUAL"}:
        return "a class rule reads `class = expression`; join conditions with `and` or `or`"
    if found.type == "NOT" and "AND" in exp:
        return "negate a condition after `and` or `or`: `a and not b`"
    if found.type in OPERATORS and "NAME" in exp:
        if exp & {"NOT", "LPAR"}:  # where an operand must come
            return f"an operand is missing before `{found}`: remove the extra operator or write the missing name"
        return "`and`, `or` and `not` are operators and cannot be used as names"
    if exp == {"SCORE"}:
        return "give each class a number: `scores ideal 1, acceptable 0.5, bad 0`"
    if "RBRACE" in exp:
        return "close the `{` block with `}`"
    if exp & {"RPAR"} and found.type != "RPAR":
        return "close the parenthesis with `)`"
    if exp == {"STRING"} or exp == {"STRING", "NAME"}:
        return 'write the text in double quotes: "like this"'
    if "NAME" in exp:
        return "names start with a letter or `_` and hold letters, digits and `_`"
    return "items are: " + ", ".join(f"`{k}`" for k in ITEM_KEYWORDS)


def _misspelt_keyword(parser: Lark, exc: UnexpectedToken, src: SourceFile) -> dg.Diagnostic | None:
    """A name where only keywords fit (`questoin "…"`, `propositon x {`), or a
    response line whose first word is no class rule (`rnak a > b`, reported
    at its second word, where `=` was expected): a keyword misspelt."""
    tok = exc.token
    if set(exc.expected) == {"EQUAL"}:
        # The word before, alone at the start of its line, read as a class name.
        line_start = src.text.rfind("\n", 0, tok.start_pos) + 1
        head = src.text[line_start:tok.start_pos]
        words = head.split()
        if len(words) != 1 or not re.fullmatch(r"[A-Za-z_]\w*", words[0]):
            return None
        word, start = words[0], line_start + head.index(words[0])
        best = dg.closest(word, RESPONSE_KEYWORDS)
    elif tok.type == "NAME" and "NAME" not in exc.expected:
        word, start = str(tok), tok.start_pos
        candidates = keywords(parser, exc.expected)
        line_start = src.text.rfind("\n", 0, start) + 1
        before = src.text[line_start:start].rstrip()
        if "=" in before and re.search(r"[\w)]$", before):
            # Just after an operand of an expression, where the parser has
            # already closed it: `a andd b`.
            candidates += ["and", "or"]
        best = dg.closest(word, candidates)
    else:
        return None
    if best is None or best == word:
        return None
    line = src.text.count("\n", 0, start) + 1
    col = start - (src.text.rfind("\n", 0, start) + 1) + 1
    span = Span(src.name, line, col, line, col + len(word), start, start + len(word))
    return dg.error("E0010", span, f"unknown keyword `{word}`", f"did you mean `{best}`?")


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
        early = _item_keyword_at_line_start(src, tok, exc.expected)
        if early is not None:
            # An item keyword where the previous item was still open, either
            # seen as a keyword (a) or read as a plain name (b) by the lexer.
            word = src.text[early.start:early.end]
            expected = f"; expected {expected_words(parser, exc.expected)}" if early.start == tok.start_pos else ""
            return dg.error("E0016", early, f"the item before `{word}` is incomplete{expected}",
                            _help_for(exc.expected, tok) if expected else
                            "finish the previous item (a dangling `and`, `or`, `not`, `(` or `{`?)")
        misspelt = _misspelt_keyword(parser, exc, src)
        if misspelt is not None:
            return misspelt
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
