"""What one line of a data file means: a conversation, a completion, and the
response type it is judged under. Every command and API that reads such lines
(`grade`, `classify`, `fit`, `eval`, the reward) resolves them here, so they
agree on the one routing rule:

- `response_type` on the line names it (any spelling `policy.response_type`
  accepts); an unknown name is an error;
- otherwise `category` goes through the policy's routes; a category with no
  route (and no `route default`) gets no response type: `None`, no RBR reward;
- a line with neither is an error.

The rule itself is `CompiledPolicy.route_item` (the reward and the trainer
integrations use it too); this module locates its errors at a line's field.
The conversation check (`checked_conversation`) is here for every door too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from ..diagnostics import LOSSY, json_type
from ..errors import LINE_SHAPE, ConversationError, DataError, GraderError, LineError, PolicyError  # noqa: F401 (LINE_SHAPE: for the readers)
from ..policy import CompiledPolicy
from ..policy.rendering import check_conversation


class PromptTooLong(GraderError):
    """Items whose grader prompts the grader's context cannot hold, found before
    any forward pass (`data.probabilities.too_long`): `problems` maps each
    item's index to its `TooLong`. Readers of files locate them at their lines."""

    def __init__(self, problems: Mapping[int, Any]):
        self.problems = dict(problems)
        first = min(self.problems)
        more = len(self.problems) - 1
        super().__init__(f"item {first}: {self.problems[first].message}; {self.problems[first].help}"
                         + (f" (and {more} more item{'s' * (more > 1)})" if more else ""))

    def located(self, path, lines) -> DataError:
        """The same problems as a `DataError` at their lines of `path` (`lines[i]`: item i's line)."""
        try:
            source = Path(path).read_text(encoding="utf-8", errors=LOSSY)
        except OSError:
            source = ""  # the diagnostics then point at their lines' starts
        texts = source.split("\n")  # lines as the JSONL reader numbers them
        diags = [v.diagnostic(str(path), lines[k], texts[lines[k] - 1].rstrip("\r") if lines[k] <= len(texts) else "")
                 for k, v in sorted(self.problems.items())]
        return DataError(diags, {str(path): source} if source else {})


def response_type_of(policy: CompiledPolicy, record: Mapping[str, Any]) -> Optional[str]:
    """The response type a record is judged under, or None (no route: no RBR
    reward): `CompiledPolicy.route_item`'s rule, its errors located at the field."""
    name, category = record.get("response_type"), record.get("category")
    if name is None and category is None:
        raise LineError("E0301", "the line has neither `response_type` nor `category`; add one of them")
    try:
        return policy.route_item(response_type=name, category=category)
    except PolicyError as exc:
        key = "response_type" if name is not None else "category"
        value = record[key]
        if isinstance(value, str):  # only a response type can be unknown
            raise LineError("E0302", str(exc), key, "name a response type of the policy, or give `category` instead")
        raise LineError("E0301", f"`{key}` must be a string, not {json_type(value)}", key,
                        "name a response type of the policy: " + ", ".join(policy.response_types)
                        if key == "response_type" else 'write the request category as text: "category": "C-R"')


def checked_conversation(value: Any) -> list:
    """The one conversation check every door uses (data lines, `RBRReward`, the
    trainer integrations): a list or tuple of messages (or an array of them, as
    parquet readers give lists back), each with string `role` and `content`.

    Returns a new list of `{"role", "content"}` dicts: other keys are dropped,
    because prompts see only these two and the grade cache keys on the
    conversation (an exported chat's message ids would defeat it). Raises
    ConversationError (`policy.rendering.check_conversation`'s message); the
    caller adds where the conversation was."""
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()
    check_conversation(value)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def completion_text(value: Any) -> str:
    """A completion given as a string, or as assistant message(s)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        messages = checked_conversation(value)
        if any(m["role"] != "assistant" for m in messages):
            raise ConversationError("the completion's messages must all be the assistant's")
        return "".join(m["content"] for m in messages)
    if isinstance(value, list) and not value:
        return ""
    raise ConversationError("`completion` is a string or a list of assistant messages")


def conversation_of(record: Mapping[str, Any]) -> list:
    """The conversation before the completion (`prompt`), checked."""
    prompt = record.get("prompt")
    if prompt is None:
        raise LineError("E0301", "the line has no `prompt` (the conversation as a list of messages)", "prompt")
    try:
        return checked_conversation(prompt)
    except ConversationError as exc:
        raise LineError("E0301", f"`prompt`: {exc}", "prompt")


def read_line(policy: CompiledPolicy, row: Any) -> tuple[Optional[str], list, str]:
    """(response type or None, conversation, completion) of one parsed line; every
    problem is a `LineError` pointing at its field."""
    if not isinstance(row, Mapping):
        raise LineError("E0301", "each line must be a JSON object")
    conversation = conversation_of(row)
    if row.get("completion") is None:
        raise LineError("E0301", "the line has no `completion` (the reply graded: a string or a list of "
                        "assistant messages)")
    try:
        completion = completion_text(row.get("completion"))
    except ConversationError as exc:
        raise LineError("E0301", f"`completion`: {exc}", "completion")
    return response_type_of(policy, row), conversation, completion
