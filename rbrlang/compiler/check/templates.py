"""Passes over templates and the grader block."""
from __future__ import annotations

import re
import sys

from jinja2 import TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SecurityError

from ... import diagnostics as dg
from ...policy.rendering import DEFAULT_TEMPLATE, TEMPLATE_VARIABLES, environment, render_examples
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
        return
    _check_renders(ctx, tpl, parsed)


# What the sandbox refuses only while rendering, found before a grader meets
# it: tags that load other templates (there are none to load), then one
# rendering of each sample below, bounded in steps and characters, which
# meets sandbox refusals, undefined attributes, oversized values, errors of
# filters and endless loops, on the path those samples take.
_LOADS = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from … import",
          nodes.Extends: "extends"}
SAMPLES = (
    ("a conversation of one user message", [{"role": "user", "content": "Hello, can you help me?"}]),
    ("a conversation with system, user and assistant turns", [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hello! What can I do for you?"},
        {"role": "user", "content": "Can you help me?"},
    ]),
)
SAMPLE_RESPONSE = "Of course. Here is what I can do."
SAMPLE_QUESTION = "Does the final assistant message answer the user?"
SAMPLE_EXAMPLES = render_examples([{"label": "yes", "turns": (("user", "Hi?"), ("assistant", "Hi!"))}])
MAX_STEPS = 100_000  # lines of the compiled template run for one sample
MAX_OUTPUT = 100_000  # characters of one sample's prompt


class _OverLimit(Exception):
    def __init__(self, message: str, lineno: int = 0):
        super().__init__(message)
        self.lineno = lineno  # the template line, when no template frame shows it


def _check_renders(ctx: Context, tpl: ast.Template, parsed) -> None:
    for node in parsed.find_all(tuple(_LOADS)):
        ctx.error("E0131", _template_line_span(ctx, tpl.text, node.lineno),
                  f"template `{tpl.name.text}` uses `{{% {_LOADS[type(node)]} %}}`, but a policy's "
                  "templates cannot load other templates",
                  "write the text it would load into this template")
        return
    template = environment().from_string(tpl.text.value)
    for sample, conversation in SAMPLES:
        try:
            _render_bounded(template, conversation)
        except Exception as exc:  # whatever rendering raises is the author's to fix
            ctx.error("E0131", _template_line_span(ctx, tpl.text, _template_lineno(exc)),
                      f"template `{tpl.name.text}` fails to render: {_describe(exc)}",
                      _render_help(exc), [f"rendering it for {sample}"])
            return


def _render_bounded(template, conversation) -> str:
    """Render, stopping past MAX_STEPS lines of template code or MAX_OUTPUT
    characters. Lines are counted by a trace function on the template's
    frames only (Jinja compiles a template to Python named `<template>`)."""
    steps, last = 0, 1

    def count(frame, event, arg):
        nonlocal steps, last
        if event == "line":
            steps, last = steps + 1, frame.f_lineno
            if steps > MAX_STEPS:
                raise _OverLimit(f"it runs more than {MAX_STEPS:,} steps")
        return count

    def calls(frame, event, arg):
        return count if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        out, size = [], 0
        for chunk in template.generate(conversation=conversation, response=SAMPLE_RESPONSE,
                                       question=SAMPLE_QUESTION, examples=SAMPLE_EXAMPLES):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise _OverLimit(f"it makes more than {MAX_OUTPUT:,} characters",
                                 template.get_corresponding_lineno(last))
            out.append(chunk)
        return "".join(out)
    finally:
        sys.settrace(previous)


def _template_lineno(exc: BaseException) -> int:
    """The template line of the innermost template frame (Jinja rewrites
    tracebacks to show template lines)."""
    line, tb = getattr(exc, "lineno", 0) or 1, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _OverLimit):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "it calls itself without end"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, (SecurityError, UndefinedError)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _render_help(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return ("templates run in a sandbox: no attributes starting with `_`, no changes to "
                "`conversation`, no values over a million characters")
    if isinstance(exc, UndefinedError):
        return ("`conversation` is a list of messages with `role` and `content`, `response` a string; "
                "test what may be missing with `is defined` or `length`")
    if isinstance(exc, (_OverLimit, RecursionError, OverflowError)):
        return "a template is one prompt: loop over `conversation`, not over large ranges or itself"
    return "a template renders for every graded item: make this part work for any conversation"


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
    system = settings["system"].values[0].value if "system" in settings else ""
    prefill = settings["prefill"].values[0].value if "prefill" in settings else ""
    for key, value in (("system", system), ("prefill", prefill)):
        if key in settings and not value.strip():
            ctx.error("E0118", settings[key].span, f"an empty `{key}`",
                      f"give the {'system message' if key == 'system' else 'answer cue'} text, or drop the line")
    return GraderSpec(template, yes, no, system, prefill)


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
