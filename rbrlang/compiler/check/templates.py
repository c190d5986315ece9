"""Passes over templates and the grader block."""
from __future__ import annotations

import re

from jinja2 import TemplateSyntaxError, meta

from ... import diagnostics as dg
from ...policy.rendering import DEFAULT_TEMPLATE, TEMPLATE_VARIABLES, environment
from ...source import Span
from ..syntax import ast
from .context import Context
from .model import GraderSpec

DEFAULT_YES = ("yes", "Yes")
DEFAULT_NO = ("no", "No")

# `question` and `examples` are substituted at compile time, so they may only
# appear as plain output expressions.
SLOT = re.compile(r"\{\{-?\s*(question|examples)\s*-?\}\}")


def check_templates(ctx: Context) -> None:
    for tpl in ctx.of(ast.Template):
        _check_one(ctx, tpl)


def _check_one(ctx: Context, tpl: ast.Template) -> None:
    text = tpl.text.value
    env = environment()
    try:
        parsed = env.parse(text)
        env.compile(parsed)  # finds unknown filters and tests, which parsing accepts
    except TemplateSyntaxError as exc:
        message = exc.message or "invalid template"
        unknown = re.match(r"No (filter|test) named '(\w+)'", message)
        if unknown:
            kind, name = unknown.groups()
            known = env.filters if kind == "filter" else env.tests
            help = dg.did_you_mean(name, known) or f"use a {kind} Jinja2 knows, or `transcript`"
        else:
            help = "check that every `{{`, `{%` and `{#` is closed"
        ctx.error("E0117", _template_line_span(ctx, tpl.text, exc.lineno or 1),
                  f"template `{tpl.name.text}` is not valid Jinja2: {message}", help)
        return
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(TEMPLATE_VARIABLES))
    for name in unknown:
        ctx.error("E0104", _find_in_string(ctx, tpl.text, name),
                  f"unknown template variable `{name}`",
                  "templates may use " + ", ".join(f"`{v}`" for v in TEMPLATE_VARIABLES))
    if unknown:
        return
    leftover = meta.find_undeclared_variables(env.parse(SLOT.sub("", text)))
    for name in sorted(leftover & {"question", "examples"}):
        ctx.error("E0104", _find_in_string(ctx, tpl.text, name),
                  f"`{name}` is filled in when the policy compiles, so it may only appear as `{{{{ {name} }}}}`",
                  f"write `{{{{ {name} }}}}` on its own; test `conversation` and `response` instead")
    if "response" not in meta.find_undeclared_variables(parsed):
        ctx.error("E0104", tpl.name.span, f"template `{tpl.name.text}` never shows the `response`",
                  "add `{{ response }}`: the grader must see the message it judges")


def template_sources(ctx: Context) -> dict[str, str]:
    out = {t.name.text: t.text.value for t in ctx.of(ast.Template)}
    out.setdefault("default", DEFAULT_TEMPLATE)
    return out


def check_grader(ctx: Context) -> GraderSpec:
    grader = ctx.one(ast.Grader, "grader")
    settings: dict[str, ast.GraderSetting] = {}
    if grader is not None:
        for s in grader.settings:
            if s.key in settings:
                ctx.error("E0119", s.span, f"`{s.key}` given twice in the grader",
                          f"list every spelling in one `{s.key}` line")
            else:
                settings[s.key] = s
    template = settings["template"].values[0].text if "template" in settings else "default"
    yes = tuple(v.value for v in settings["yes"].values) if "yes" in settings else DEFAULT_YES
    no = tuple(v.value for v in settings["no"].values) if "no" in settings else DEFAULT_NO
    for key, values in (("yes", yes), ("no", no)):
        if key in settings and any(not v.strip() for v in values):
            ctx.error("E0118", settings[key].span, f"an empty `{key}` spelling",
                      "spellings are the words the grader answers with, like \"yes\"")
    both = sorted(set(yes) & set(no))
    if both:
        ctx.error("E0118", settings["no"].span if "no" in settings else grader.span,
                  f"`{both[0]}` is spelt as both yes and no", "give each answer its own spellings")
    return GraderSpec(template, yes, no)


def _string_start_line(ctx: Context, s: ast.Str) -> int:
    text = ctx.program.sources.get(s.span.file, "")
    if text.startswith('"""\n', s.span.start):
        return s.span.line + 1
    return s.span.line


def _template_line_span(ctx: Context, s: ast.Str, lineno: int) -> Span:
    line = _string_start_line(ctx, s) + lineno - 1
    if line > s.span.end_line:
        line = s.span.line
    text = ctx.program.sources.get(s.span.file, "").split("\n")
    body = text[line - 1] if line <= len(text) else ""
    col = len(body) - len(body.lstrip()) + 1
    return Span(s.span.file, line, col, line, max(col + 1, len(body) + 1))


def _find_in_string(ctx: Context, s: ast.Str, name: str) -> Span:
    text = ctx.program.sources.get(s.span.file, "")
    m = re.compile(r"\b%s\b" % re.escape(name)).search(text, s.span.start, s.span.end)
    if not m:
        return s.span
    line = text.count("\n", 0, m.start()) + 1
    col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return Span(s.span.file, line, col, line, col + len(name), m.start(), m.end())
