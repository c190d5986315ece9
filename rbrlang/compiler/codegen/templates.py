"""Each grader proposition's prompt template, with its question and examples in.

The result is Jinja2 source that leaves only `conversation` and `response`
open. Author text is inserted as literal text: anything that looks like Jinja
syntax in a question or an example is wrapped so it prints as written.
"""
from __future__ import annotations

from ..check.model import CheckedPolicy, PropositionSpec
from ..check.templates import SLOT
from ...policy.rendering import render_examples

_JINJA_OPENERS = ("{{", "{%", "{#")


def literal(text: str) -> str:
    if not any(o in text for o in _JINJA_OPENERS):
        return text  # the usual case stays readable
    # Inside a raw block only `{%` can end it, so each one is printed separately.
    return "{% raw %}" + text.replace("{%", "{% endraw %}{{ '{%' }}{% raw %}") + "{% endraw %}"


def prompt_template(policy: CheckedPolicy, prop: PropositionSpec) -> str:
    source = policy.templates[prop.template]
    examples = render_examples([{"label": e.label, "turns": e.turns} for e in prop.examples])
    values = {"question": literal(prop.question), "examples": literal(examples)}
    return SLOT.sub(lambda m: values[m.group(1)], source)
