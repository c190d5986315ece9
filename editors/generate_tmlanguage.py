"""Write editors/vscode/syntaxes/rbr.tmLanguage.json from grammar/rbr.lark.

The keywords, operators, punctuation and the regexes of names, numbers,
comments, `/patterns/`, roles and `all(`/`any(`/`none(` are the grammar's
own terminals (read through `rbrlang.compiler.syntax.lexicon`), so the
highlighting cannot drift from the language: tests/test_editors.py
regenerates the file and compares. Only strings are spelt out here: TextMate
matches one line at a time, so a `\"\"\"` string needs begin/end rules, not
the grammar's one regex.

    python editors/generate_tmlanguage.py          # rewrite the file
    python editors/generate_tmlanguage.py --check  # exit 1 if it is stale
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rbrlang.compiler.syntax.lexicon import Lexicon, lexicon  # noqa: E402

OUTPUT = ROOT / "editors/vscode/syntaxes/rbr.tmLanguage.json"

# Scopes for the grammar's word terminals and punctuation; a new one gets the default.
WORD_TERMINAL_SCOPES = {"FUNC": "support.function.builtin.rbr", "ROLE": "storage.type.role.rbr"}
PUNCTUATION_SCOPES = {"{": "punctuation.section.block.begin.rbr", "}": "punctuation.section.block.end.rbr",
                      "(": "punctuation.section.parens.begin.rbr", ")": "punctuation.section.parens.end.rbr",
                      ",": "punctuation.separator.comma.rbr"}
DEFAULT_PUNCTUATION = "keyword.operator.rbr"
# The grammar's escapes inside strings (`\n`, `\u{1F600}`…) and the Jinja2 of templates.
ESCAPE = {"name": "constant.character.escape.rbr", "match": r"\\(?:u\{[0-9A-Fa-f]*\}|.)"}
JINJA = {"name": "meta.embedded.template.rbr", "match": r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}"}


def _words(words) -> str:
    return r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w))) + r")\b"


def tm_grammar(lex: Lexicon) -> dict:
    p = lex.patterns
    keywords = [w for w in lex.keywords if w not in lex.operators]
    repository = {
        "comment": {"name": "comment.line.number-sign.rbr", "match": p["COMMENT"]},
        "string-triple": {"name": "string.quoted.triple.rbr", "begin": '"""', "end": '"""',
                          "patterns": [ESCAPE, JINJA]},
        # A one-line string; an unterminated one ends with its line, as the lexer says.
        "string": {"name": "string.quoted.double.rbr", "begin": '"', "end": '"|$', "patterns": [ESCAPE, JINJA]},
        "regex": {"name": "string.regexp.rbr", "match": p["REGEX"]},
        "number": {"name": "constant.numeric.rbr", "match": r"(?<![\w.])(?:" + p["SCORE"] + ")"},
        "operator": {"name": "keyword.operator.logical.rbr", "match": _words(lex.operators)},
        "keyword": {"name": "keyword.control.rbr", "match": _words(keywords)},
        "name": {"name": "variable.other.rbr", "match": r"\b" + p["NAME"]},
    }
    order = ["comment", "string-triple", "string", "regex"]
    for terminal, (_words_, regex) in sorted(lex.word_terminals.items()):
        key = terminal.lower()
        repository[key] = {"name": WORD_TERMINAL_SCOPES.get(terminal, f"keyword.other.{key}.rbr"),
                           "match": r"\b" + regex}
        order.append(key)
    order += ["operator", "keyword", "number", "name"]
    for i, mark in enumerate(lex.punctuation):  # longest first: `->` before `>`
        key = f"punctuation-{i}"
        repository[key] = {"name": PUNCTUATION_SCOPES.get(mark, DEFAULT_PUNCTUATION), "match": re.escape(mark)}
        order.append(key)
    return {
        "comment": "GENERATED from grammar/rbr.lark by editors/generate_tmlanguage.py: do not edit",
        "name": "rbr",
        "scopeName": "source.rbr",
        "fileTypes": ["rbr"],
        "patterns": [{"include": f"#{key}"} for key in order],
        "repository": repository,
    }


def rendered(lex: Lexicon | None = None) -> str:
    return json.dumps(tm_grammar(lex or lexicon()), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = rendered()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python editors/generate_tmlanguage.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
