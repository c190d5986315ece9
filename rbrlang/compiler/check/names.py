"""Passes over the namespace: declarations, duplicates, and name references."""
from __future__ import annotations

from ..syntax import ast
from .context import KIND_WORDS, Context, Symbol

DECLARED_KINDS = {
    ast.Template: "template", ast.Proposition: "proposition", ast.Matches: "proposition",
    ast.Define: "define", ast.Response: "response",
}


def collect_names(ctx: Context) -> None:
    """One namespace per policy, imports included; a name is declared once."""
    def declare(ident: ast.Ident, kind: str, item) -> None:
        prior = ctx.symbols.get(ident.text)
        if prior is not None:
            ctx.error("E0101", ident.span, f"`{ident.text}` is already declared",
                      "rename one of them; propositions, defines, classes, response types "
                      "and templates share one namespace",
                      related=[(prior.ident.span, f"first declared here as {KIND_WORDS[prior.kind]}")])
            return
        ctx.symbols[ident.text] = Symbol(ident.text, kind, ident, item)

    for _, item in ctx.items:
        kind = DECLARED_KINDS.get(type(item))
        if kind:
            declare(item.name, kind, item)
        elif isinstance(item, ast.Classes):
            for ident in item.names:
                declare(ident, "class", item)


def resolve_refs(ctx: Context) -> None:
    """Every name used in an expression, a template slot or a feature list exists
    and is of the right kind."""
    for _, item in ctx.items:
        if isinstance(item, ast.Define):
            _resolve_expr(ctx, item.expr, f"in define `{item.name.text}`")
        elif isinstance(item, ast.Response):
            for part in item.items:
                if isinstance(part, ast.ClassRule):
                    _resolve_expr(ctx, part.expr, f"in class `{part.name.text}`")
                elif isinstance(part, ast.ExtraFeatures):
                    for ident in part.names:
                        ctx.lookup(ident, ("proposition",), "a feature")
        elif isinstance(item, ast.Proposition):
            for part in item.items:
                if isinstance(part, ast.PropTemplate):
                    _resolve_template(ctx, part.name)
        elif isinstance(item, ast.Grader):
            for setting in item.settings:
                if setting.key == "template":
                    _resolve_template(ctx, setting.values[0])


def _resolve_expr(ctx: Context, expr: ast.Expr, where: str) -> None:
    for ref in ast.walk_refs(expr):
        ctx.lookup(ref.name, ("proposition", "define"), f"an operand {where}")


def _resolve_template(ctx: Context, ident: ast.Ident) -> None:
    if ident.text == "default" and ident.text not in ctx.symbols:
        return  # the built-in one
    ctx.lookup(ident, ("template",), "a template slot")
