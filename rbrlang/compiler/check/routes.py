"""Passes over routes: known targets, each category routed once."""
from __future__ import annotations

from ..syntax import ast
from .context import Context
from .model import RouteSpec


def check_routes(ctx: Context) -> list[RouteSpec]:
    seen: dict[str, ast.Str] = {}
    default_at = None
    specs = []
    for route in ctx.of(ast.Route):
        sym = ctx.symbols.get(route.target.text)
        if (sym is None or sym.kind != "response") and not ctx.seen_before("E0110", route.target):
            what = f"`{route.target.text}` is not a response type"
            ctx.error("E0110", route.target.span, what,
                      ctx.suggest(route.target.text, "response") or "route to a declared `response`")
        if route.categories is None:
            if default_at is not None:
                ctx.error("E0111", route.span, "`default` routed twice",
                          "keep one `route default`", related=[(default_at, "first routed here")])
            default_at = route.span
        else:
            for cat in route.categories:
                if cat.value in seen:
                    ctx.error("E0111", cat.span, f"category \"{cat.value}\" routed twice",
                              "route each category to one response type",
                              related=[(seen[cat.value].span, "first routed here")])
                else:
                    seen[cat.value] = cat
        specs.append(RouteSpec(None if route.categories is None else tuple(c.value for c in route.categories),
                               route.target.text))
    return specs
