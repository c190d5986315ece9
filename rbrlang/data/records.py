"""What one line of a data file means: a conversation, a completion, and the
response type it is judged under. Every command and API that reads such lines
(`grade`, `classify`, `fit`, `eval`, the reward) resolves them here, so they
agree on the one routing rule:

- `response_type` on the line names it (any spelling `policy.response_type`
  accepts); an unknown name is an error;
- otherwise `category` goes through the policy's routes; a category with no
  route (and no `route default`) gets no response type: `None`, no RBR reward;
- a line with neither is an error.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ..errors import ConversationError, PolicyError
from ..policy import CompiledPolicy
from ..policy.rendering import check_conversation

LINE_SHAPE = ('a line reads {"prompt": [messages], "completion": "…" or [assistant messages], '
              '"response_type": "…" or "category": "…"}')


class RecordError(PolicyError):
    """A line whose fields do not fit; `key` names the field, for the caret."""

    def __init__(self, message: str, key: Optional[str] = None, code: str = "E0301"):
        super().__init__(message)
        self.key, self.code = key, code


def response_type_of(policy: CompiledPolicy, record: Mapping[str, Any]) -> Optional[str]:
    """The response type a record is judged under, or None (no route: no RBR reward)."""
    if record.get("response_type") is not None:
        try:
            return policy.response_type(str(record["response_type"])).name
        except PolicyError as exc:
            raise RecordError(str(exc), "response_type", "E0302")
    if "category" in record:
        return policy.route(str(record["category"]))
    raise RecordError("the line has neither `response_type` nor `category`; add one of them")


def completion_text(value: Any) -> str:
    """A completion given as a string, or as assistant message(s)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        check_conversation(value)
        if any(m["role"] != "assistant" for m in value):
            raise ConversationError("the completion's messages must all be the assistant's")
        return "".join(m["content"] for m in value)
    if isinstance(value, list) and not value:
        return ""
    raise ConversationError("`completion` is a string or a list of assistant messages")


def conversation_of(record: Mapping[str, Any]) -> list:
    """The conversation before the completion (`prompt`), checked."""
    prompt = record.get("prompt")
    if prompt is None:
        raise RecordError("the line has no `prompt` (the conversation as a list of messages)", "prompt")
    try:
        check_conversation(prompt)
    except ConversationError as exc:
        raise RecordError(f"`prompt`: {exc}", "prompt")
    return list(prompt)
