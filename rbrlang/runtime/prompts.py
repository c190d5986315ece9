"""Grader prompts as token ids: the chat template, and the static prefix split.

Every prompt of one proposition starts with the same text (instructions,
question, examples). That prefix is tokenised once; an item's ids are the
prefix ids followed by the ids of the rest. The split is made after a newline,
where byte-level and sentencepiece tokenisers start a new token anyway.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..policy import CompiledPolicy
from .answers import GraderError


@dataclass(frozen=True)
class Prefix:
    text: str
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]
    prefix_len: int  # how many leading ids are the proposition's shared prefix (0: none)
    dropped_turns: int = 0


class PromptEncoder:
    def __init__(self, tokenizer, use_chat_template: bool | None = None, max_length: int | None = None,
                 truncate: str = "error"):
        if truncate not in ("error", "oldest_turns"):
            raise ValueError("truncate is 'error' or 'oldest_turns'")
        self.tokenizer = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise GraderError("the tokenizer has no chat template; pass use_chat_template=False")
        self.chat = has_template if use_chat_template is None else use_chat_template
        self.max_length = max_length
        self.truncate = truncate
        self._prefixes: dict[tuple[str, str], Prefix] = {}

    def text(self, prompt: str) -> str:
        """The prompt as the grader model reads it."""
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def prefix(self, policy: CompiledPolicy, proposition: str) -> Prefix:
        key = (policy.proposition(proposition).template, proposition)
        if key not in self._prefixes:
            static = policy.static_prefix(proposition)
            a = self.text(static + "\x00a")
            b = self.text(static + "\x01b")
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            cut = a.rfind("\n", 0, n) + 1  # end the prefix at a line break
            text = a[:cut]
            ids = self._ids(text, first=True) if text else ()
            self._prefixes[key] = Prefix(text, ids)
        return self._prefixes[key]

    def encode(self, policy: CompiledPolicy, proposition: str, conversation: Sequence[Mapping[str, str]],
               response: str, item: int = 0) -> Encoded:
        """The exact ids graded for one item, truncating if asked and needed."""
        dropped = 0
        conversation = list(conversation)
        while True:
            enc = self._encode_once(policy, proposition, conversation, response)
            if self.max_length is None or len(enc.ids) <= self.max_length:
                return Encoded(enc.ids, enc.prefix_len, dropped)
            if self.truncate == "error" or not conversation:
                hint = ("pass truncate='oldest_turns' (`--truncate oldest-turns`) to drop the oldest turns"
                        if self.truncate == "error" else "even the response alone does not fit")
                raise GraderError(f"item {item}, proposition `{proposition}`: the prompt has {len(enc.ids)} "
                                  f"tokens, more than the grader's context of {self.max_length}; {hint}")
            conversation = conversation[1:]  # never the response
            dropped += 1

    def _encode_once(self, policy, proposition, conversation, response) -> Encoded:
        full = self.text(policy.render(proposition, conversation, response))
        prefix = self.prefix(policy, proposition)
        if prefix.text and full.startswith(prefix.text):
            return Encoded(prefix.ids + self._ids(full[len(prefix.text):], first=False), len(prefix.ids))
        # A template that branches on the conversation may not share the prefix.
        return Encoded(self._ids(full, first=True), 0)

    def _ids(self, text: str, first: bool) -> tuple[int, ...]:
        # A chat template writes its own special tokens into the text. Without
        # one, the prompt starts with BOS (when the tokenizer has one) and
        # nothing is appended: `add_special_tokens` may also add EOS.
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if first and not self.chat and bos is not None:
            ids = [bos] + list(ids)
        return tuple(ids)
