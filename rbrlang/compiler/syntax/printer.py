"""fmt: the canonical spelling of a module. Comments are kept; the output is
re-parsed and must give the same syntax tree, every time."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import ast
from .strings import quote

WIDTH = 88
INDENT = "  "


@dataclass
class Line:
    anchor: Optional[int]  # source line this output line stands for
    text: str  # may hold newlines (a multi-line string)
    end: Optional[int] = None  # last source line it covers (for trailing comments)


class FormatError(Exception):
    """The formatter's output did not parse back to the same tree (a bug)."""


def format_module(module: ast.Module) -> str:
    # The header stands for its own source line: comments above it (a licence,
    # a title) stay above it.
    header = max(module.span.line, 1)
    lines: list[Line] = [Line(header, f"rbr {module.version}", header)]
    prev: Optional[tuple[ast.Item, list[Line]]] = None
    for item in module.items:
        out = _item(item)
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

def _item(item: ast.Item) -> list[Line]:
    s = item.span
    if isinstance(item, ast.PolicyDecl):
        desc = f" {quote(item.description.value, '')}" if item.description else ""
        return [Line(s.line, f"policy {item.name.text}{desc}", s.end_line)]
    if isinstance(item, ast.Import):
        return [Line(s.line, f"import {quote(item.path.value, '')}", s.end_line)]
    if isinstance(item, ast.Grader):
        body = [Line(g.span.line, INDENT + _setting(g), g.span.end_line) for g in item.settings]
        return _block(s, "grader {", body)
    if isinstance(item, ast.Template):
        return [Line(s.line, f"template {item.name.text} {quote(item.text.value, '')}", s.end_line)]
    if isinstance(item, ast.Proposition):
        body: list[Line] = []
        for part in item.items:
            body.extend(_prop_item(part))
        return _block(s, f"proposition {item.name.text} {{", body)
    if isinstance(item, ast.Matches):
        return [Line(s.line, f"proposition {item.name.text} = matches /{item.pattern}/{item.flags}", s.end_line)]
    if isinstance(item, ast.Define):
        head = f"define {item.name.text} ="
        one = f"{head} {expr(item.expr)}"
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
            body.extend(_response_item(part, width))
        return _block(s, f"response {item.name.text} {{", body)
    if isinstance(item, ast.Route):
        cats = "default" if item.categories is None else ", ".join(quote(c.value, "") for c in item.categories)
        return [Line(s.line, f"route {cats} -> {item.target.text}", s.end_line)]
    raise TypeError(type(item))  # pragma: no cover


def _block(span, head: str, body: list[Line]) -> list[Line]:
    if not body:
        return [Line(span.line, head + "}", span.end_line)]
    return [Line(span.line, head)] + body + [Line(span.end_line, "}", span.end_line)]


def _setting(g: ast.GraderSetting) -> str:
    if g.key == "template":
        return f"template {g.values[0].text}"
    return g.key + " " + " ".join(quote(v.value, INDENT) for v in g.values)


def _prop_item(part) -> list[Line]:
    s = part.span
    if isinstance(part, ast.Question):
        return [Line(s.line, f"{INDENT}question {quote(part.text.value, INDENT)}", s.end_line)]
    if isinstance(part, ast.PropTemplate):
        return [Line(s.line, f"{INDENT}template {part.name.text}", s.end_line)]
    if part.short:
        return [Line(s.line, f"{INDENT}example {part.label.text} {quote(part.turns[0].text.value, INDENT)}",
                     s.end_line)]
    inner = INDENT * 2
    turns = [Line(t.span.line, f"{inner}{t.role} {quote(t.text.value, inner)}", t.span.end_line)
             for t in part.turns]
    head = f"{INDENT}example {part.label.text} {{"
    if not turns:
        return [Line(s.line, head + "}", s.end_line)]
    return [Line(s.line, head)] + turns + [Line(s.end_line, INDENT + "}", s.end_line)]


def _response_item(part, width: int) -> list[Line]:
    s = part.span
    if isinstance(part, ast.ClassRule):
        head = f"{INDENT}{part.name.text.ljust(width)} = "
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
    placed: list[tuple[float, ast.Comment]] = []
    for c in comments:
        if not c.own_line:
            hosts = [ln for ln in lines if ln.end == c.line]
            if hosts:
                hosts[-1].text += "  " + c.text
                continue
            heads = [ln.anchor for ln in lines if ln.anchor is not None and ln.anchor <= c.line]
            placed.append(((heads[-1] if heads else c.line) - 0.5, c))
        else:
            placed.append((float(c.line), c))
    placed.sort(key=lambda pc: pc[0])
    out: list[str] = []
    i = 0
    for ln in lines:
        if ln.anchor is not None:
            group = []
            while i < len(placed) and placed[i][0] < ln.anchor:
                group.append(placed[i])
                i += 1
            indent = ln.text[: len(ln.text) - len(ln.text.lstrip(" "))]
            for k, (pos, c) in enumerate(group):
                if k and pos - group[k - 1][0] > 1 and out and out[-1] != "":
                    out.append("")  # keep one blank line between comment paragraphs
                out.append(indent + c.text)
            if group and ln.anchor - group[-1][0] > 1 and out[-1] != "":
                out.append("")  # a section comment stays apart from what follows
        out.append(ln.text)
    tail = placed[i:]
    for k, (pos, c) in enumerate(tail):
        if (k == 0 or pos - tail[k - 1][0] > 1) and out and out[-1] != "":
            out.append("")
        out.append(c.text)
    return "\n".join(out).rstrip("\n") + "\n"
