"""Passes over defines: cycles, then conversion to `logic` formulas."""
from __future__ import annotations

from .. import logic
from ..syntax import ast
from .context import Context


def define_cycles(ctx: Context) -> None:
    """A define may use defines, but never itself through any chain."""
    defines = {d.name.text: d for d in ctx.of(ast.Define)}
    deps = {name: [r.name for r in ast.walk_refs(d.expr) if r.name.text in defines]
            for name, d in defines.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    reported: set[frozenset] = set()

    for start in defines:
        if state.get(start):
            continue
        # Iterative DFS: the path is the current chain, so a back edge is a cycle.
        path: list[str] = [start]
        iters = [iter(deps[start])]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
                continue
            name = nxt.text
            if state.get(name) == 1:
                cycle = path[path.index(name):] + [name]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    ctx.error("E0103", nxt.span, f"define cycle: {' → '.join(cycle)}",
                              "a define cannot depend on itself; write one of them "
                              "in terms of propositions only")
            elif not state.get(name):
                state[name] = 1
                path.append(name)
                iters.append(iter(deps[name]))


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
