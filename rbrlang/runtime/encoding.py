"""Grader prompts as token ids, split where rows share computation.

A row is one (item, proposition) prompt. Rows share text in two ways:
- every item of one proposition starts with that proposition's static prefix
  (instructions, question, examples) when the template puts those first;
- every proposition of one item starts with the same conversation and response
  when the template puts the conversation first (the question after it).
Both start with a *head* common to all rows. An item's ids are tokenised piece
by piece between those boundaries, so each shared part has the same ids in
every row that shares it. Boundaries fall just after a newline, where
byte-level and sentencepiece tokenisers start a new token anyway: the pieces
give the same ids as the whole text would (the tests check this).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..policy import CompiledPolicy
from .answers import GraderError


@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]
    head: int  # ids shared by every row (all items, all propositions)
    prop_prefix: int  # ids shared by every item of this proposition (>= head)
    item_prefix: int  # ids shared by every proposition of this item (>= head)
    dropped_turns: int = 0


def _line_cut(text: str, n: int) -> int:
    """The longest prefix of `text[:n]` that ends with a newline."""
    return text.rfind("\n", 0, n) + 1


def _common(texts: Sequence[str]) -> int:
    return _line_cut(texts[0], len(os.path.commonprefix(list(texts))))


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
        self._static: dict[str, str] = {}  # template source -> static prefix (chat applied)
        self._ids: dict[str, tuple[int, ...]] = {}  # shared piece -> its ids

    def text(self, prompt: str) -> str:
        """The prompt as the grader model reads it."""
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def static_prefix(self, policy: CompiledPolicy, proposition: str) -> str:
        template = policy.proposition(proposition).template
        if template not in self._static:
            static = policy.static_prefix(proposition)
            a, b = self.text(static + "\x00a"), self.text(static + "\x01b")
            self._static[template] = a[:_common([a, b])]
        return self._static[template]

    def graded(self, policy: CompiledPolicy) -> list[str]:
        return [p.name for p in policy.propositions if p.kind == "grader"]

    def encode(self, policy: CompiledPolicy, proposition: str, conversation, response: str,
               item: int = 0) -> Encoded:
        """The exact ids graded for one row."""
        return self.encode_item(policy, conversation, response, item)[proposition]

    def encode_item(self, policy: CompiledPolicy, conversation: Sequence[Mapping[str, str]], response: str,
                    item: int = 0) -> dict[str, Encoded]:
        """Every grader proposition's ids for one item, truncating if asked and
        needed (the same turns are dropped for every proposition)."""
        names = self.graded(policy)
        conversation = list(conversation)
        dropped = 0
        while True:
            texts = {n: self.text(policy.render(n, conversation, response)) for n in names}
            out = self._pieces(policy, texts, dropped)
            longest = max(out, key=lambda n: len(out[n].ids)) if out else None
            if self.max_length is None or longest is None or len(out[longest].ids) <= self.max_length:
                return out
            if self.truncate == "error" or not conversation:
                hint = ("pass truncate='oldest_turns' (`--truncate oldest-turns`) to drop the oldest turns"
                        if self.truncate == "error" else "even the response alone does not fit")
                raise GraderError(f"item {item}, proposition `{longest}`: the prompt has {len(out[longest].ids)} "
                                  f"tokens, more than the grader's context of {self.max_length}; {hint}")
            conversation = conversation[1:]  # never the response
            dropped += 1

    def _pieces(self, policy: CompiledPolicy, texts: dict[str, str], dropped: int) -> dict[str, Encoded]:
        statics = {n: self.static_prefix(policy, n) for n in texts}
        regular = [n for n in texts if texts[n].startswith(statics[n])]
        head = _common([statics[n] for n in regular]) if regular else 0
        item = max(head, _common([texts[n] for n in regular])) if regular else 0
        local: dict[str, tuple[int, ...]] = {}  # this item's shared pieces
        out = {}
        for name, text in texts.items():
            static = len(statics[name])
            if name not in regular:  # a template that branches on the data: nothing shared
                out[name] = Encoded(self._tok(text, True, None), 0, 0, 0, dropped)
                continue
            cuts = sorted({0, head, static, item, len(text)})
            ids: tuple[int, ...] = ()
            at = {0: 0}
            for lo, hi in zip(cuts, cuts[1:]):
                cache = self._ids if hi <= static else local if hi <= item else None
                ids += self._tok(text[lo:hi], lo == 0, cache)
                at[hi] = len(ids)
            out[name] = Encoded(ids, at[head], at[static], at[item], dropped)
        return out

    def _tok(self, text: str, first: bool, cache: dict | None) -> tuple[int, ...]:
        # Shared pieces recur in many rows: tokenise each once.
        key = ("^" if first else "") + text
        if cache is not None and key in cache:
            return cache[key]
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        # A chat template writes its own special tokens into the text. Without
        # one, the prompt starts with BOS (when the tokenizer has one); nothing is
        # appended (`add_special_tokens` may also add EOS).
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if first and not self.chat and bos is not None:
            ids = [bos] + ids
        result = tuple(ids)
        if cache is not None:
            cache[key] = result
        return result
