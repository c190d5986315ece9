"""Passes over propositions: questions and examples (patterns: regexes.py)."""
from __future__ import annotations

from ..syntax import ast
from .context import Context

LABELS = ("yes", "no")


def check_propositions(ctx: Context) -> None:
    for prop in ctx.of(ast.Proposition):
        questions = [i for i in prop.items if isinstance(i, ast.Question)]
        templates = [i for i in prop.items if isinstance(i, ast.PropTemplate)]
        if not questions:
            ctx.error("E0120", prop.name.span, f"proposition `{prop.name.text}` has no question",
                      'add `question "…?"`: the yes/no question the grader answers')
        for extra in questions[1:]:
            ctx.error("E0119", extra.span, "question declared twice", "keep one question per proposition")
        instructs = [i for i in prop.items if isinstance(i, ast.Instruct)]
        for extra in instructs[1:]:
            ctx.error("E0119", extra.span, "instruct declared twice", "keep one instruct per proposition")
        if instructs and not instructs[0].text.value.strip():
            ctx.error("E0120", instructs[0].text.span, "the instruct text is empty",
                      "write what a reply does when the answer is yes, or remove the line (the question is used)")
        for extra in templates[1:]:
            ctx.error("E0119", extra.span, "template declared twice", "keep one template per proposition")
        if questions and not questions[0].text.value.strip():
            ctx.error("E0120", questions[0].text.span, "the question is empty", "write the yes/no question")
        for ex in (i for i in prop.items if isinstance(i, ast.Example)):
            _check_example(ctx, ex)


def _check_example(ctx: Context, ex: ast.Example) -> None:
    if ex.label.text not in LABELS:
        ctx.error("E0121", ex.label.span, f"an example's answer is `yes` or `no`, not `{ex.label.text}`",
                  "write `example yes …` or `example no …`")
    if ex.short:
        return
    roles = [t.role for t in ex.turns]
    becauses = [t for t in ex.turns if t.role == "because"]
    for extra in becauses[1:]:
        ctx.error("E0121", extra.span, "an example has one `because`", "join the reasons into one")
    if becauses and roles[-1] != "because":
        ctx.error("E0121", becauses[0].span, "`because` comes last in an example",
                  "move it after the assistant's turn")
    spoken = [r for r in roles if r != "because"]
    if not spoken or spoken[-1] != "assistant":
        ctx.error("E0121", ex.span, "an example ends with the `assistant` turn being graded",
                  'add `assistant "…"` after the other turns')
    if "system" in spoken[1:]:
        ctx.error("E0121", ex.span, "`system` can only be an example's first turn", "move it first")

