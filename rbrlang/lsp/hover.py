"""What hovering over a name shows, as Markdown: a proposition's question and
examples, a class's formula as `rbrc explain` gives it (a sum of products),
a route's response type."""
from __future__ import annotations

from typing import Optional

from ..compiler.syntax import ast
from ..compiler.syntax.printer import expr
from .analysis import Analysis, Occurrence

MAX_EXAMPLES = 8  # a hover is a glance; the file has the rest
MAX_TEXT = 400


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _code(text: str) -> str:
    return "```rbr\n" + text + "\n```"


def hover_text(analysis: Analysis, occ: Occurrence) -> Optional[str]:
    decl = analysis.declaration_of(occ.name)
    item = decl.item if decl is not None else None
    if occ.kind == "class":
        return _class(analysis, occ)
    if occ.kind == "response":
        return _response(analysis, occ.name, item)
    if isinstance(item, ast.Proposition):
        return _proposition(item)
    if isinstance(item, ast.Matches):
        return _code(f"proposition {occ.name} = matches /{item.pattern}/{item.flags}") + \
            "\n\nAnswered by its pattern, without a grader call."
    if isinstance(item, ast.Define):
        return _code(f"define {occ.name} = {expr(item.expr)}")
    if isinstance(item, ast.Template):
        return _code(f"template {occ.name}") + "\n\n" + _short(item.text.value)
    if occ.kind == "template" and occ.name == "default":
        return _code("template default") + "\n\nThe compiler's built-in grader prompt."
    return None  # undeclared: the diagnostic says so


def _proposition(item: ast.Proposition) -> str:
    question = next((p.text.value for p in item.items if isinstance(p, ast.Question)), "")
    out = [_code(f"proposition {item.name.text}"), "", f"**Question:** {_short(question)}"]
    examples = [p for p in item.items if isinstance(p, ast.Example)]
    if examples:
        out += ["", "**Examples:**"]
        for ex in examples[:MAX_EXAMPLES]:
            turns = "; ".join(f"{t.role}: “{_short(t.text.value)}”" for t in ex.turns) or "(empty reply)"
            out.append(f"- `{ex.label.text}` — {turns}")
        if len(examples) > MAX_EXAMPLES:
            out.append(f"- … and {len(examples) - MAX_EXAMPLES} more")
    return "\n".join(out)


def _class(analysis: Analysis, occ: Occurrence) -> str:
    # In a response: that response's formula; elsewhere (`classes`): every response's.
    responses = [occ.item] if isinstance(occ.item, ast.Response) else \
        [i for i in analysis.items_of_program() if isinstance(i, ast.Response)]
    sums = analysis.sums
    out = [_code(f"class {occ.name}")]
    for response in responses:
        rule = next((p for p in response.items if isinstance(p, ast.ClassRule) and p.name.text == occ.name), None)
        if rule is None:
            continue
        out.append("")
        if (response.name.text, occ.name) in sums:
            out.append(f"in `{response.name.text}`, as a sum of products:")
            out.append(_code(f"{occ.name} = {sums[(response.name.text, occ.name)]}"))
        else:
            out.append(f"in `{response.name.text}`, as written (the sum of products shows once the policy checks):")
            out.append(_code(f"{occ.name} = {expr(rule.expr)}"))
    return "\n".join(out)


def _response(analysis: Analysis, name: str, item) -> str:
    out = [_code(f"response {name}")]
    if isinstance(item, ast.Response):
        classes = [p.name.text for p in item.items if isinstance(p, ast.ClassRule)]
        out += ["", "classes: " + ", ".join(f"`{c}`" for c in classes)]
    routed = []
    for i in analysis.items_of_program():
        if isinstance(i, ast.Route) and i.target.text == name:
            routed += ["default"] if i.categories is None else [c.value for c in i.categories]
    if routed:
        out += ["", "routes: " + ", ".join(f"`{c}`" for c in routed)]
    return "\n".join(out)
