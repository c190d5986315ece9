"""fmt: the canonical spelling of a module. Comments are kept; the output is
re-parsed and must give the same syntax tree, every time."""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Optional

from . import ast
from .strings import quote

WIDTH = 88
INDENT = "  "


@dataclass
class Line:
    anchor: Optional[int]  # source line this output line stands for
    text: str  # may hold newlines (a multi-line string)
    end: Optional[int] = None  # last source line it covers (for trailing comments)
    comment_indent: Optional[str] = None  # for comments above it, if not its own indent (a `}`)


# Whether any comment is on a source line in [first, last].
HasComment = Callable[[int, int], bool]


class FormatError(Exception):
    """The formatter's output did not parse back to the same tree (a bug)."""


def format_module(module: ast.Module) -> str:
    # The header stands for its own source line: comments above it (a licence,
    # a title) stay above it.
    header = max(module.span.line, 1)
    lines: list[Line] = [Line(header, f"rbr {module.version}", header)]
    at = sorted(c.line for c in module.comments)

    def has(first: int, last: int) -> bool:
        i = bisect.bisect_left(at, first)
        return i < len(at) and at[i] <= last

    prev: Optional[tuple[ast.Item, list[Line]]] = None
    for item in module.items:
        out = _item(item, has)
        if prev is None or _blank_between(prev[0], prev[1], item, out):
            lines.append(Line(None, ""))
        lines.extend(out)
        prev = (item, out)
    return _with_comments(lines, module.comments)


def _blank_between(prev: ast.Item, prev_out: list[Line], item: ast.Item, out: list[Line]) -> bool:
    """One-line imports, routes, matches and defines stay grouped unless the
    author separated them; everything else is set apart by a blank line."""
    groupable = (ast.Import, ast.Route, ast.Matches, ast.Define)

    def single(lines: list[Line]) -> bool:
        return len(lines) == 1 and "\n" not in lines[0].text

    same = type(prev) is type(item) and isinstance(item, groupable)
    source_gap = item.span.line - prev.span.end_line > 1
    return not (same and single(out) and single(prev_out)) or source_gap


# --- items ---------------------------------------------------------------------

def _item(item: ast.Item, has: HasComment) -> list[Line]:
    s = item.span
    if isinstance(item, ast.PolicyDecl):
        desc = f" {quote(item.description.value, '')}" if item.description else ""
        return [Line(s.line, f"policy {item.name.text}{desc}", s.end_line)]
    if isinstance(item, ast.Import):
        return [Line(s.line, f"import {quote(item.path.value, '')}", s.end_line)]
    if isinstance(item, ast.Grader):
        body = [Line(g.span.line, INDENT + _setting(g), g.span.end_line) for g in item.settings]
        return _block(s, "grader {", body, has)
    if isinstance(item, ast.Template):
        return [Line(s.line, f"template {item.name.text} {quote(item.text.value, '')}", s.end_line)]
    if isinstance(item, ast.Proposition):
        body: list[Line] = []
        for part in item.items:
            body.extend(_prop_item(part, has))
        return _block(s, f"proposition {item.name.text} {{", body, has)
    if isinstance(item, ast.Matches):
        return [Line(s.line, f"proposition {item.name.text} = matches /{item.pattern}/{item.flags}", s.end_line)]
    if isinstance(item, ast.Define):
        head = f"define {item.name.text} ="
        one = f"{head} {expr(item.expr)}"
        kept = _as_written(item.expr, head + " ", INDENT, s, has)
        if kept:
            return kept
        if len(one) <= WIDTH:
            return [Line(s.line, one, s.end_line)]
        out = [Line(s.line, head)] + [Line(None, INDENT + t) for t in _wrap(item.expr, len(INDENT))]
        out[-1].end = s.end_line
        return out
    if isinstance(item, ast.Classes):
        return [Line(s.line, "classes " + " > ".join(i.text for i in item.names), s.end_line)]
    if isinstance(item, ast.Response):
        width = max((len(p.name.text) for p in item.items if isinstance(p, ast.ClassRule)), default=0)
        body = []
        for part in item.items:
            body.extend(_response_item(part, width, has))
        return _block(s, f"response {item.name.text} {{", body, has)
    if isinstance(item, ast.Route):
        cats = "default" if item.categories is None else ", ".join(quote(c.value, "") for c in item.categories)
        return [Line(s.line, f"route {cats} -> {item.target.text}", s.end_line)]
    raise TypeError(type(item))  # pragma: no cover


def _block(span, head: str, body: list[Line], has: HasComment, indent: str = "") -> list[Line]:
    """`head {` … `}`. The head line ends on its source line, so a comment
    after the `{` stays there; comments above the `}` are indented as the
    body is; a block holding only comments stays open."""
    if not body and not has(span.line, span.end_line - 1):
        return [Line(span.line, head + "}", span.end_line)]
    return [Line(span.line, head, span.line)] + body + \
        [Line(span.end_line, indent + "}", span.end_line, indent + INDENT)]


def _setting(g: ast.GraderSetting) -> str:
    if g.key == "template":
        return f"template {g.values[0].text}"
    return g.key + " " + " ".join(quote(v.value, INDENT) for v in g.values)


def _prop_item(part, has: HasComment) -> list[Line]:
    s = part.span
    if isinstance(part, ast.Question):
        return [Line(s.line, f"{INDENT}question {quote(part.text.value, INDENT)}", s.end_line)]
    if isinstance(part, ast.Instruct):
        return [Line(s.line, f"{INDENT}instruct {quote(part.text.value, INDENT)}", s.end_line)]
    if isinstance(part, ast.PropTemplate):
        return [Line(s.line, f"{INDENT}template {part.name.text}", s.end_line)]
    if part.short:
        return [Line(s.line, f"{INDENT}example {part.label.text} {quote(part.turns[0].text.value, INDENT)}",
                     s.end_line)]
    inner = INDENT * 2
    turns = [Line(t.span.line, f"{inner}{t.role} {quote(t.text.value, inner)}", t.span.end_line)
             for t in part.turns]
    return _block(s, f"{INDENT}example {part.label.text} {{", turns, has, INDENT)


def _response_item(part, width: int, has: HasComment) -> list[Line]:
    s = part.span
    if isinstance(part, ast.ClassRule):
        head = f"{INDENT}{part.name.text.ljust(width)} = "
        kept = _as_written(part.expr, head, " " * len(head), s, has)
        if kept:
            return kept
        wrapped = _wrap(part.expr, len(head))
        out = [Line(s.line, head + wrapped[0])]
        out += [Line(None, " " * len(head) + t) for t in wrapped[1:]]
        out[-1].end = s.end_line
        return out
    if isinstance(part, ast.ExtraFeatures):
        return [Line(s.line, f"{INDENT}features " + ", ".join(n.text for n in part.names), s.end_line)]
    if isinstance(part, ast.ClassScores):
        entries = ", ".join(f"{e.name.text} {e.score.text}" for e in part.entries)
        return [Line(s.line, f"{INDENT}scores {entries}", s.end_line)]
    groups = [g[0].text if len(g) == 1 else "{" + ", ".join(n.text for n in g) + "}" for g in part.groups]
    return [Line(s.line, f"{INDENT}rank " + " > ".join(groups), s.end_line)]


def _as_written(e: ast.Expr, head: str, indent: str, span, has: HasComment) -> Optional[list[Line]]:
    """An expression with comments inside keeps the author's line breaks, so
    each comment stays beside the operands it was written beside: the
    operands of a top-level `and`/`or` chain (or a call's arguments) that
    start on one source line stay on one output line. None when there is no
    comment inside, or no chain to break (the comments then go above)."""
    if span.end_line == span.line or not has(span.line, span.end_line - 1):
        return None
    if isinstance(e, ast.Call):
        items, sep, first, pad = e.args, ", ", f"{e.func}(", " " * (len(e.func) + 1)
    elif isinstance(e, (ast.And, ast.Or)):
        word = "and" if isinstance(e, ast.And) else "or"
        items, sep, first, pad = e.operands, f" {word} ", "", f"{word} "
    else:
        return None
    need = _prec(e) + 1 if isinstance(e, (ast.And, ast.Or)) else 0
    groups: list[list] = []  # [first source line, last source line, texts]
    for o in items:
        text = expr(o) if isinstance(e, ast.Call) else _paren(o, need)
        if groups and o.span.line <= groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], o.span.end_line)
            groups[-1][2].append(text)
        else:
            groups.append([o.span.line, o.span.end_line, [text]])
    if isinstance(e, ast.Call) and groups[0][0] == span.line:
        indent, pad = "", " " * len(head + first)  # under the first argument, as `_wrap_call` does
    out: list[Line] = []
    for i, (line, end, texts) in enumerate(groups):
        text = sep.join(texts)
        if isinstance(e, ast.Call):
            text = (first if i == 0 else pad) + text + (")" if i == len(groups) - 1 else ",")
        elif i:
            text = pad + text
        if i == 0 and line == span.line:
            out.append(Line(span.line, head + text, end))
        else:
            if i == 0:
                out.append(Line(span.line, head.rstrip(), span.line))
            out.append(Line(line, indent + text, end))
    out[-1].end = max(out[-1].end or 0, span.end_line)
    return out


# --- expressions ---------------------------------------------------------------

def _prec(e: ast.Expr) -> int:
    return {ast.Or: 1, ast.And: 2, ast.Not: 3}.get(type(e), 4)


def expr(e: ast.Expr) -> str:
    """Fewest parentheses that still give back the same tree: a nested `and`
    inside `and` (written with parentheses) keeps them."""
    if isinstance(e, ast.Ref):
        return e.name.text
    if isinstance(e, ast.Call):
        return f"{e.func}(" + ", ".join(expr(a) for a in e.args) + ")"
    if isinstance(e, ast.Not):
        return "not " + _paren(e.operand, 3)
    word = " and " if isinstance(e, ast.And) else " or "
    need = _prec(e) + 1
    return word.join(_paren(o, need) for o in e.operands)


def _paren(e: ast.Expr, need: int) -> str:
    text = expr(e)
    return text if _prec(e) >= need else f"({text})"


def _wrap(e: ast.Expr, column: int) -> list[str]:
    """Break a long top-level `and`/`or` chain before its operators, and a
    long `all/any/none(...)` after its commas, aligned under its first argument."""
    one = expr(e)
    if column + len(one) <= WIDTH:
        return [one]
    if isinstance(e, ast.Call):
        return _wrap_call(e, column)
    if not isinstance(e, (ast.And, ast.Or)):
        return [one]
    word = "and " if isinstance(e, ast.And) else "or "
    need = _prec(e) + 1
    lines = [""]
    for i, o in enumerate(e.operands):
        lead = "" if i == 0 else word
        text = _paren(o, need)
        joined = f"{lines[-1]} {lead}{text}" if i else text
        if column + len(joined) <= WIDTH:
            lines[-1] = joined
            continue
        start = lead if i else ""
        if i:
            lines.append(start)
        if isinstance(o, ast.Call) and column + len(start + text) > WIDTH:
            sub = _wrap_call(o, column + len(start))
            lines[-1] = start + sub[0]
            lines.extend(" " * len(start) + s for s in sub[1:])
        else:
            lines[-1] = start + text
    return lines


def _wrap_call(e: ast.Call, column: int) -> list[str]:
    head = f"{e.func}("
    args = [expr(a) for a in e.args]
    lines = [head + args[0]]
    pad = " " * len(head)
    for a in args[1:]:
        lines[-1] += ","
        if column + len(lines[-1]) + 1 + len(a) + 1 <= WIDTH:
            lines[-1] += " " + a
        else:
            lines.append(pad + a)
    lines[-1] += ")"
    return lines


# --- comments ------------------------------------------------------------------

def _with_comments(lines: list[Line], comments: tuple[ast.Comment, ...]) -> str:
    # Each comment gets a position in source lines: an own-line comment goes
    # before the first output line that stands for a later source line. A
    # trailing comment stays on the output line that ends on its source line;
    # if that line was merged away, it goes above the item that held it.
    # A comment inside the source lines an output line merged (an expression
    # printed on one line) goes above that line, in source order.
    placed: list[tuple[float, ast.Comment]] = []
    for c in comments:
        merged = [ln for ln in lines if ln.anchor is not None and ln.end is not None
                  and ln.anchor <= c.line <= ln.end and (ln.anchor < c.line or not c.own_line)]
        if not c.own_line:
            hosts = [ln for ln in lines if ln.end == c.line]
            if hosts:
                hosts[-1].text += "  " + c.text
                continue
            heads = [ln.anchor for ln in lines if ln.anchor is not None and ln.anchor <= c.line]
            placed.append(((merged[-1].anchor if merged else heads[-1] if heads else c.line) - 0.5, c))
        elif merged:
            placed.append((merged[-1].anchor - 0.5, c))
        else:
            placed.append((float(c.line), c))
    placed.sort(key=lambda pc: pc[0])  # stable: comments at one place keep their order
    out: list[str] = []
    i = 0
    for ln in lines:
        if ln.anchor is not None:
            group = []
            while i < len(placed) and placed[i][0] < ln.anchor:
                group.append(placed[i])
                i += 1
            indent = ln.comment_indent if ln.comment_indent is not None else \
                ln.text[: len(ln.text) - len(ln.text.lstrip(" "))]
            for k, (pos, c) in enumerate(group):
                if k and pos - group[k - 1][0] > 1 and out and out[-1] != "":
                    out.append("")  # keep one blank line between comment paragraphs
                out.append(indent + c.text)
            if group and ln.anchor - group[-1][0] > 1 and out[-1] != "":
                out.append("")  # a section comment stays apart from what follows
        out.append(ln.text)
    tail = placed[i:]
    last = max((ln.end or ln.anchor or 0 for ln in lines), default=0)  # the last source line printed
    for k, (pos, c) in enumerate(tail):
        if pos - (tail[k - 1][0] if k else last) > 1 and out and out[-1] != "":
            out.append("")
        out.append(c.text)
    return "\n".join(out).rstrip("\n") + "\n"
