"""parse: source text → `ast.Module` plus diagnostics. The stage's one entry."""
from __future__ import annotations

import functools
import re
from typing import Optional

from lark import Token
from lark.exceptions import UnexpectedInput, VisitError

from ... import diagnostics as dg
from ...errors import EscapeError
from ...source import SourceFile, Span
from ..result import Result
from . import ast
from .errors import ITEM_KEYWORDS, to_diagnostic
from .grammar import collect_comments, parser
from .transform import ToAst, tree_depth

LANGUAGE_VERSION = 1
MAX_DEPTH = 100  # tree levels; real policies nest a handful
MAX_SYNTAX_ERRORS = 20

_ITEM_START = re.compile(r"^[ \t]*(?:%s)\b" % "|".join(ITEM_KEYWORDS), re.M)
# A word first on its line and followed by what an item's keyword is (a name,
# a string or a `{`): `propositon x {`, but not a name broken onto its own line.
_LINE_WORD = re.compile(r"^[A-Za-z_]\w*(?=[ \t]+[\w\"{])", re.M)
_INDENT = re.compile(r"[ \t]*")
_HEADER = re.compile(r"\A(?:\s|#[^\n]*)*rbr\b")


def parse_source(src: SourceFile) -> Result[ast.Module]:
    """The module (None when there are syntax errors), its diagnostics and its source."""
    module, diags = _parse_module(src)
    return Result(module, tuple(diags), {src.name: src.text})


def _parse_module(src: SourceFile) -> tuple[Optional[ast.Module], tuple[dg.Diagnostic, ...]]:
    text = src.text
    diags: list[dg.Diagnostic] = []
    if not _HEADER.match(text):
        span = _first_token_span(src)
        return None, (dg.error(
            "E0013", span, "missing version header" if text.strip() else "empty file: missing version header",
            "start the file with `rbr 1`"),)

    # Recovery: blank out the item holding each error (keeping line and column
    # numbers intact) and parse again, so one run reports every broken item.
    work = text
    tree = None
    for _ in range(MAX_SYNTAX_ERRORS):
        comments: list[Token] = []
        try:
            tree = _parse(work, comments)
            break
        except UnexpectedInput as exc:
            diag = to_diagnostic(exc, parser(), src)
            diags.append(diag)
            # An incomplete item is reported where the next one starts: blank
            # the incomplete one, which lies just before.
            pos = diag.span.start - 1 if diag.code == "E0016" else diag.span.start
            blanked = _blank_item(work, pos)
            if blanked is None:
                break
            work = blanked
    if diags or tree is None:
        return None, tuple(dg.normalise(diags))

    depth, deepest = tree_depth(tree, MAX_DEPTH + 1)
    if depth > MAX_DEPTH:
        meta = deepest.meta
        # Point at where the limit is crossed, one word wide: the node itself
        # runs to the end of the expression.
        word = re.match(r"\w+|\S", src.text[meta.start_pos:]) if not meta.empty else None
        span = Span(src.name, meta.line, meta.column, meta.line, meta.column + len(word.group(0)),
                    meta.start_pos, meta.start_pos + len(word.group(0))) if word else Span.point(src.name)
        return None, (dg.error("E0015", span, f"expression nested more than {MAX_DEPTH} levels deep",
                               "name parts of it with `define`"),)
    try:
        try:
            module: ast.Module = ToAst(src.name).transform(tree)
        except VisitError as exc:
            raise exc.orig_exc
    except EscapeError as exc:
        return None, (dg.error("E0014", exc.span, f"invalid escape `{exc.text}` in string",
                               'escapes are \\n \\t \\r \\\\ \\" \\0 and \\u{hex}'),)
    except RecursionError:  # pragma: no cover - guarded by MAX_DEPTH
        return None, (dg.error("E0015", Span.point(src.name), "input nested too deeply",
                               "name parts of it with `define`"),)
    module = ast.Module(module.version, module.items, _comments(text, comments), module.span)
    if module.version != LANGUAGE_VERSION:
        hdr = re.search(r"rbr\s+(\d+)", text)
        span = _offset_span(src, hdr.start(1), hdr.end(1)) if hdr else Span.point(src.name)
        diags.append(dg.error("E0013", span, f"unsupported language version {module.version}",
                              f"this compiler reads `rbr {LANGUAGE_VERSION}`"))
        return None, tuple(diags)
    return module, ()


def _parse(text: str, comments: list[Token]):
    # Comments are ignored by the grammar; the lexer callback keeps them for fmt.
    with collect_comments(comments):
        return parser().parse(text)


def _comments(text: str, tokens: list[Token]) -> tuple[ast.Comment, ...]:
    out = []
    for tok in tokens:
        line_start = text.rfind("\n", 0, tok.start_pos) + 1
        own = text[line_start:tok.start_pos].strip() == ""
        out.append(ast.Comment(str(tok).rstrip(), tok.line, own))
    return tuple(out)


def _item_starts(text: str) -> list[int]:
    """Where items start: an item keyword first on its line, or a misspelling
    of one at the start of a line (`propositon x {`), so that the item before
    it is blanked without it and its own error is reported in turn."""
    starts = {m.start() for m in _ITEM_START.finditer(text)}
    starts |= {m.start() for m in _LINE_WORD.finditer(text) if _near_keyword(m.group(0))}
    # `template` also starts a line inside `grader` and `proposition` blocks:
    # only the least indented starts are items, so a block is blanked whole
    # and its inner lines do not echo as errors of their own.
    indent = {s: _INDENT.match(text, s).end() - s for s in starts}
    least = min(indent.values(), default=0)
    return sorted(s for s in starts if indent[s] == least)


@functools.lru_cache(maxsize=4096)
def _near_keyword(word: str) -> bool:
    return 3 <= len(word) <= 16 and dg.closest(word, ITEM_KEYWORDS) is not None


def _blank_item(text: str, pos: int) -> Optional[str]:
    starts = _item_starts(text)
    before = [s for s in starts if s <= pos]
    after = [s for s in starts if s > pos]
    if not before:
        return None
    lo, hi = before[-1], (after[0] if after else len(text))
    if lo == hi:
        return None
    return text[:lo] + re.sub(r"[^\n]", " ", text[lo:hi]) + text[hi:]


def _first_token_span(src: SourceFile) -> Span:
    m = re.search(r"\S+", src.text)
    if not m:
        return Span.point(src.name)
    return _offset_span(src, m.start(), min(m.end(), m.start() + 40))


def _offset_span(src: SourceFile, start: int, end: int) -> Span:
    line = src.text.count("\n", 0, start) + 1
    col = start - (src.text.rfind("\n", 0, start) + 1) + 1
    return Span(src.name, line, col, line, col + (end - start), start, end)
