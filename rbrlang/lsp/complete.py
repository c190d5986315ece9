"""Completion: what the grammar accepts at the cursor, asked of the compiler's
own LALR parser (keywords), and the policy's names where a name fits."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..compiler.syntax.errors import ITEM_KEYWORDS
from ..compiler.syntax.grammar import parser
from ..compiler.syntax.lexicon import lexicon

# Where the cursor's item starts: an item keyword at the start of a line. The
# parser reads from there (after a header), so completing in a 50,000-line
# file parses one item, not the file.
_ITEM = re.compile(r"^(?:%s)\b" % "|".join(ITEM_KEYWORDS), re.M)
_PARTIAL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_ITEM_CHARS = 20_000

# The kinds of name that fit after a token, where that is plain; elsewhere any name.
_AFTER = {"__ANON_0": ("response",), "TEMPLATE": ("template",),
          "EQUAL": ("proposition", "define"), "AND": ("proposition", "define"), "OR": ("proposition", "define"),
          "NOT": ("proposition", "define"), "LPAR": ("proposition", "define"), "FEATURES": ("proposition",),
          "SCORES": ("class",), "RANK": ("class",)}


@dataclass(frozen=True)
class Suggestion:
    label: str
    kind: str  # keyword, or a name's kind (proposition, define, class, response, template)


def suggestions(text: str, offset: int, kinds: dict[str, str]) -> list[Suggestion]:
    """What may be written at `offset` of `text`; `kinds`: the policy's names (name -> kind)."""
    before = text[:offset]
    partial = _PARTIAL.search(before)
    before = before[:partial.start()] if partial else before
    starts = [m.start() for m in _ITEM.finditer(before)]
    head = "rbr 1\n" if starts else ""
    chunk = before[starts[-1]:] if starts else before
    words = lexicon()
    accepts, last = None, None
    if len(chunk) <= MAX_ITEM_CHARS:
        try:
            interactive = parser().parse_interactive(head + chunk)
            tokens = interactive.exhaust_lexer()
            accepts = interactive.accepts()
            last = tokens[-1].type if tokens else None
        except Exception:  # a broken prefix (an open string, a stray character): offer everything
            accepts = None
    out: list[Suggestion] = []
    if accepts is None:
        out += [Suggestion(w, "keyword") for w in words.keywords]
        out += [Suggestion(name, kind) for name, kind in sorted(kinds.items())]
        return out
    literal = {t.name: t.pattern.value for t in parser().terminals}
    for terminal in sorted(accepts):
        if terminal in words.word_terminals:
            out += [Suggestion(w, "keyword") for w in words.word_terminals[terminal][0]]
        elif terminal in literal and literal[terminal] in words.keywords:
            out.append(Suggestion(literal[terminal], "keyword"))
    if "NAME" in accepts:
        fits = _AFTER.get(last)
        out += [Suggestion(name, kind) for name, kind in sorted(kinds.items()) if fits is None or kind in fits]
    return out
