"""The language's words and punctuation, read from the grammar's terminals.

The editor grammar (editors/generate.py) and the language server's completion
both take their keyword lists from here, so that a keyword added to
grammar/rbr.lark reaches them without anyone copying a list.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from lark.lexer import PatternStr

from .grammar import parser

_WORD = re.compile(r"[A-Za-z_]\w*\Z")
# A terminal whose pattern opens with a group of plain words (`ROLE`, `FUNC`):
# those words, each one of its spellings.
_WORD_GROUP = re.compile(r"\((\w+(?:\|\w+)+)\)")


@dataclass(frozen=True)
class Lexicon:
    keywords: tuple[str, ...]  # every literal word (`proposition`, `and`, `rbr`…)
    word_terminals: dict  # terminal name -> (its words, its regex): ROLE, FUNC
    punctuation: tuple[str, ...]  # literal non-words (`{`, `->`…), longest first
    patterns: dict  # named terminal -> its regex (NAME, SCORE, REGEX, COMMENT…)
    # The expression operators: literal words of the grammar's `*expr` rules.
    operators: tuple[str, ...]


@functools.lru_cache(maxsize=None)
def lexicon() -> Lexicon:
    lark = parser()
    keywords, punctuation, groups, patterns = [], [], {}, {}
    for t in lark.terminals:
        value = t.pattern.value
        if isinstance(t.pattern, PatternStr):
            (keywords if _WORD.match(value) else punctuation).append(value)
        elif (m := _WORD_GROUP.match(value)) is not None:
            groups[t.name] = (tuple(m.group(1).split("|")), value)
        else:
            patterns[t.name] = value
    by_terminal = {t.name: t.pattern.value for t in lark.terminals if isinstance(t.pattern, PatternStr)}
    operators = []
    for rule in lark.rules:
        origin = rule.origin.name
        origin = origin if isinstance(origin, str) else origin.value
        if "expr" in origin:  # and the helper rules Lark makes of them (`__or_expr_star_0`)
            for sym in rule.expansion:
                word = by_terminal.get(sym.name)
                if word and _WORD.match(word) and word not in operators:
                    operators.append(word)
    return Lexicon(tuple(sorted(set(keywords))), groups, tuple(sorted(set(punctuation), key=lambda p: (-len(p), p))),
                   patterns, tuple(sorted(operators)))
