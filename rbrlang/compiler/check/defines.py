"""Passes over defines: cycles, then conversion to `logic` formulas."""
from __future__ import annotations

from ...policy import logic
from ..syntax import ast
from .context import Context
from .graphs import cycles


def define_cycles(ctx: Context) -> None:
    """A define may use defines, but never itself through any chain."""
    defines = {d.name.text: d for d in ctx.of(ast.Define)}

    def uses(name):
        return [(r.name.text, r.name) for r in ast.walk_refs(defines[name].expr) if r.name.text in defines]

    reported: set[frozenset] = set()
    for cycle, ident in cycles(defines, uses):
        if frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            ctx.error("E0103", ident.span, f"define cycle: {' → '.join(cycle)}",
                      "a define cannot depend on itself; write one of them in terms of propositions only")


def to_formula(expr: ast.Expr) -> logic.Formula:
    if isinstance(expr, ast.Ref):
        return logic.Ref(expr.name.text)
    if isinstance(expr, ast.Not):
        return logic.Not(to_formula(expr.operand))
    if isinstance(expr, ast.And):
        return logic.And(tuple(to_formula(o) for o in expr.operands))
    if isinstance(expr, ast.Or):
        return logic.Or(tuple(to_formula(o) for o in expr.operands))
    args = tuple(to_formula(a) for a in expr.args)
    if expr.func == "all":
        return logic.And(args)
    if expr.func == "any":
        return logic.Or(args)
    return logic.Not(logic.Or(args))  # none(...)


def convert_defines(ctx: Context) -> None:
    for d in ctx.of(ast.Define):
        ctx.formulas[d.name.text] = to_formula(d.expr)
