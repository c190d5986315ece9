"""Grader prompt rendering: the one Jinja2 environment compiler and runtime share.

Templates come from the policy author; conversations and responses come from
data and are only ever passed as variables, never compiled as template source.
The sandbox keeps a template from reaching Python internals.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
        raise ConversationError(f"a conversation is a list of messages, not {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise ConversationError(f"message {i} must be an object with string `role` and `content`")


@functools.lru_cache(maxsize=None)
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True,
    )
    env.filters["transcript"] = transcript
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
