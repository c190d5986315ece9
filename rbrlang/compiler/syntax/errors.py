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
OPERATOR_WORDS = ("and", "or", "not")
# Operators of other languages, as the character the lexer stops at.
FOREIGN_OPERATORS = {
    "&": "write `and` where both must hold: `a and b`",
    "|": "write `or` where either may hold: `a or b`",
    "!": "write `not` to negate: `not a`",
    "~": "write `not` to negate: `not a`",
}


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


def _keyword_read_as_keyword(exc) -> bool:
    """Whether the token before the unexpected one was a keyword (`route C-R`:
    the item has started well) rather than a keyword read as a plain name."""
    history = getattr(exc, "token_history", None) or ()
    return bool(history) and history[-1].type != "NAME"


def _item_keyword_at_line_start(src: SourceFile, tok, expected, exc=None) -> Span | None:
    line_start = src.text.rfind("\n", 0, tok.start_pos) + 1
    head = src.text[line_start:tok.start_pos]
    if head.strip() == "" and str(tok) in ITEM_KEYWORDS:
        start = tok.start_pos
    elif head.strip() in ITEM_KEYWORDS and head.strip() == head.split()[0] and set(expected) != {"NAME"} \
            and not (exc is not None and _keyword_read_as_keyword(exc)):
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
    if found.type == "EQUAL" and "NAME" in exp:
        return "one `=` separates a name from its formula: `good = a and b`"
    if found.type == "COMMA" and "MORETHAN" in exp:
        return "order the classes from best to worst with `>`: `classes ideal > acceptable > unacceptable`"
    if exp == {"STRING", "DEFAULT"}:
        return 'quote each category: `route "C-R", "C-S" -> response`, or write `route default -> response`'
    if found.type == "STRING" and exp == {"NAME"}:
        return "a name is written without quotes"
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


def _word_span(src: SourceFile, start: int, word: str) -> Span:
    line = src.text.count("\n", 0, start) + 1
    col = start - (src.text.rfind("\n", 0, start) + 1) + 1
    return Span(src.name, line, col, line, col + len(word), start, start + len(word))


def _misspelt_operator(exc: UnexpectedToken, src: SourceFile) -> dg.Diagnostic | None:
    """`good = a adn b`, `good = a AND b`, `good = nto a` in a response: the
    parser took the misspelt operator for an operand or for the next class's
    name, and reports a missing `=` a word or two later. The misspelt word is
    one of the two words just before that place."""
    base = max(0, exc.token.start_pos - 400)  # a window: the words sit just before
    before = src.text[base:exc.token.start_pos]
    candidates = []
    last = re.search(r"([A-Za-z_]\w*)\s*\Z", before)
    if last is not None:
        candidates.append(last)
        earlier = re.search(r"([A-Za-z_]\w*)\s+\Z", before[:last.start()])
        if earlier is not None:
            candidates.append(earlier)
    declared = _declared_names(src.text)
    for m in candidates:
        word = m.group(1)
        best = dg.closest(word, OPERATOR_WORDS)
        if best is not None and best != word and word not in declared:
            return dg.error("E0010", _word_span(src, base + m.start(1), word), f"unknown operator `{word}`",
                            f"did you mean `{best}`?")
    return None


def _declared_names(text: str) -> set[str]:
    """Names the file declares (classes, propositions, defines), read roughly:
    a word that is one of them is no misspelt operator (`bad not a` lacks its
    `=`; `bad` is a class, not `and`)."""
    names = set(re.findall(r"^[ \t]*(?:proposition|define)[ \t]+([A-Za-z_]\w*)", text, re.M))
    for line in re.findall(r"^[ \t]*classes[ \t]+([^\n#]*)", text, re.M):
        names.update(re.findall(r"[A-Za-z_]\w*", line))
    return names


def _dangling_operand(exc: UnexpectedToken, src: SourceFile) -> dg.Diagnostic | None:
    """`good = a b` then `bad = …` on the next line: `b` was read as the next
    class's name, and the `=` is missed only at the next line's first word.
    Point at `b`, where the mistake is."""
    before = src.text[max(0, exc.token.start_pos - 400):exc.token.start_pos]
    m = re.search(r"([A-Za-z_]\w*)[ \t]*\n\s*\Z", before)
    if m is None:
        return None
    start = exc.token.start_pos - len(before) + m.start(1)
    word = m.group(1)
    return dg.error("E0010", _word_span(src, start, word), f"`{word}` is not joined to the formula before it",
                    f"join it with `and` or `or` (`a and {word}`); a class rule reads `class = expression`")


def _missing_comma(exc: UnexpectedToken, src: SourceFile) -> dg.Diagnostic | None:
    """`scores a 1 b 0`, `features a b`: the list ended where a `,` is missing,
    and its next entry was read as a class rule wanting `=`."""
    base = max(0, exc.token.start_pos - 400)
    m = re.search(r"([A-Za-z_]\w*)\s*\Z", src.text[base:exc.token.start_pos])
    if m is None:
        return None
    start = base + m.start(1)
    line_start = src.text.rfind("\n", 0, start) + 1
    words = src.text[line_start:start].split()
    if len(words) < 2 or words[0] not in ("scores", "features"):
        return None
    example = "scores ideal 1, acceptable 0.5, unacceptable 0" if words[0] == "scores" else "features a, b"
    return dg.error("E0010", _word_span(src, start, m.group(1)), f"missing `,` before `{m.group(1)}`",
                    f"separate the entries of a `{words[0]}` line with commas: `{example}`")


def _regex_flag(exc: UnexpectedToken, src: SourceFile) -> dg.Diagnostic | None:
    """`/x/g`: a letter right after a regular expression is a flag it does not have."""
    history = getattr(exc, "token_history", None) or ()
    last = history[-1] if history else None
    tok = exc.token
    if last is None or last.type != "REGEX" or last.end_pos != tok.start_pos or tok.type != "NAME":
        return None
    return dg.error("E0010", _word_span(src, tok.start_pos, str(tok)), f"unknown regular expression flag "
                    f"`{str(tok)[0]}`" if len(str(tok)) == 1 else f"unknown regular expression flags `{tok}`",
                    "the flags are `i` (ignore case), `m` (multi-line), `s` (`.` matches a newline) and "
                    "`x` (verbose); `matches` finds a match anywhere, so no `g` is needed")


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
            return (_missing_comma(exc, src) or _misspelt_operator(exc, src)
                    or (_dangling_operand(exc, src) if not words else None))
        word, start = words[0], line_start + head.index(words[0])
        best = dg.closest(word, RESPONSE_KEYWORDS)
        if best is None:
            return _misspelt_operator(exc, src)
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
    what = "operator" if best in OPERATOR_WORDS else "keyword"
    return dg.error("E0010", _word_span(src, start, word), f"unknown {what} `{word}`", f"did you mean `{best}`?")


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
        flag = _regex_flag(exc, src)
        if flag is not None:
            return flag
        early = _item_keyword_at_line_start(src, tok, exc.expected, exc)
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
                        FOREIGN_OPERATORS.get(ch, "comments start with `#`; text goes in double quotes"))
    assert isinstance(exc, UnexpectedEOF)
    span = Span.point(src.name, src.text.count("\n") + 1, 1, len(src.text))
    return dg.error("E0016", span, "unexpected end of file", "complete the last item")
