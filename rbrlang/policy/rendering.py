"""Grader prompt rendering: the one Jinja2 environment compiler and runtime share.

Templates come from the policy author; conversations and responses come from
data and are only ever passed as variables, never compiled as template source.
The sandbox keeps a template from reaching Python internals.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import re

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..diagnostics import json_type
from ..errors import ConversationError

# Names a template may use. `question` and `examples` are filled in at compile
# time; `conversation` and `response` at grading time.
TEMPLATE_VARIABLES = ("conversation", "response", "question", "examples")
RUNTIME_VARIABLES = ("conversation", "response")

# Used when a policy declares no template of its own. The conversation comes
# first: it is the same for every proposition, so a grader computes it once per
# completion and only the question and examples once per proposition.
DEFAULT_TEMPLATE = """\
You are grading one message written by an AI assistant. Read the conversation
below, then answer a single yes-or-no question about the assistant's final
message only. Judge what the message says, not whether it is a good answer.

{{ conversation | transcript }}
ASSISTANT: {{ response }}

Question: {{ question }}
{{ examples }}
Answer for the final assistant message of the conversation above.
Question: {{ question }}
Answer with one word, yes or no."""


def transcript(messages: Any) -> str:
    """`ROLE: content` lines, one message after another."""
    check_conversation(messages)
    return "\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)


def check_conversation(messages: Any) -> None:
    if not isinstance(messages, (list, tuple)):
        raise ConversationError(f"a conversation is a list of messages, not {json_type(messages)}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise ConversationError(f"message {i} must be an object with string `role` and `content`")


# The most characters (or items) one operation in a template may make: a
# string repeated, a filter's width, a printf field. The sandbox bounds
# `range` (100,000 items) but not these, and Jinja folds constants while it
# compiles, so `{{ "x" | center(10**9) }}` would take a gigabyte at `check`.
MAX_TEXT = 1_000_000
MAX_POWER_BITS = 10_000  # `**` on integers: a bigger result cannot even be printed
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*:[^{}]*?(\d+)")


def _too_large(what: str) -> SecurityError:
    return SecurityError(f"{what} would make more than {MAX_TEXT:,} characters")


def _check_printf(fmt: str, args) -> None:
    for m in _PRINTF.finditer(fmt):
        if any(g and g.isdigit() and int(g) > MAX_TEXT for g in m.groups()):
            raise _too_large(f"the format field `{m.group(0)}`")
        if "*" in m.groups():
            for a in args if isinstance(args, tuple) else (args,):
                if isinstance(a, int) and abs(a) > MAX_TEXT:
                    raise _too_large("a `*` width")


def _bounded_filter(name: str, func):
    """A filter that refuses integer arguments over MAX_TEXT (the value it
    filters may be anything): widths, counts and paddings are where filters
    make text out of nothing."""
    skip = 2 if hasattr(func, "jinja_pass_arg") else 1  # the context, then the value

    @functools.wraps(func)
    def bounded(*args, **kwargs):
        for a in (*args[skip:], *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_TEXT:
                raise _too_large(f"the argument {a} to filter `{name}`")
        if name == "format" and len(args) >= skip and isinstance(args[skip - 1], str):
            _check_printf(args[skip - 1], tuple(args[skip:]))
        return func(*args, **kwargs)
    return bounded


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with sizes bounded where one operation could make a huge
    value: `*` on sequences, `**` on integers, `%` formatting, `str.format`,
    and filters' integer arguments (`MAX_TEXT`)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_TEXT:
                    raise _too_large(f"repeating a sequence of {len(seq):,} {n:,} times")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(left.bit_length(), 1) * right > MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} is more than {MAX_POWER_BITS:,} bits")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        for m in _FORMAT_SPEC.finditer(fmt):
            if int(m.group(1)) > MAX_TEXT:
                raise _too_large(f"the format field `{m.group(0)}…`")
        return wrapped


@functools.lru_cache(maxsize=None)
def environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["transcript"] = transcript
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    return env


def render_examples(examples: Sequence[Mapping[str, Any]]) -> str:
    """The few-shot block that replaces `{{ examples }}` in a template.

    Each example is `{"label": "yes"|"no", "turns": [(role, text), ...]}`; a
    `because` turn becomes the reason shown after the answer.
    """
    if not examples:
        return ""
    blocks = []
    for i, ex in enumerate(examples, 1):
        lines = [f"Example {i}:"]
        because = None
        for role, text in ex["turns"]:
            if role == "because":
                because = text
            else:
                lines.append(f"{role.upper()}: {text}")
        answer = f"Answer: {ex['label']}"
        lines.append(answer + (f" ({because})" if because else ""))
        blocks.append("\n".join(lines))
    return "\nExamples:\n" + "\n\n".join(blocks) + "\n"
