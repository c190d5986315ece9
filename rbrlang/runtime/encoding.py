"""Grader prompts as token ids, with the parts rows share marked.

A row is one (item, proposition) prompt. Its ids are exactly what the
tokenizer gives the whole prompt: `tokenizer(text, add_special_tokens=False)`
of the chat-formatted text (or, without a chat template, BOS and the prompt).
Tokenising pieces and joining them is not the same: a byte-level
pre-tokeniser splits "\\n\\nQuestion" as "\\n", "\\nQuestion" but a piece
ending in "\\n\\n" as "\\n\\n"; a sentencepiece-style one (Metaspace, prepend
"first") gives every piece a leading "▁". So whole prompts are tokenised, one
batched call per item, and sharing is read off the ids afterwards:

- every item of one proposition starts with that proposition's static prefix
  (instructions, question, examples) when the template puts those first:
  `prop_prefix` is how far a row's ids agree with that prefix's ids;
- every proposition of one item starts with the same conversation and response
  when the template puts the conversation first: `item_prefix` is the longest
  common token prefix of the item's rows;
- `head` is the part common to all rows (the chat header, the instructions
  before the conversation).

A shared part is always a real prefix of each row's own ids, so reusing its
key/values is exact whatever the tokenizer does at a boundary; a boundary that
moves a token only makes that part one token shorter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..policy import CompiledPolicy
from .answers import GraderError

Ids = tuple[int, ...]
BATCH_ITEMS = 256  # items per tokenizer call: parallel enough, bounded memory


@dataclass(frozen=True)
class Encoded:
    ids: Ids
    head: int  # ids shared by every row (all items, all propositions)
    prop_prefix: int  # ids shared by every item of this proposition (>= head)
    item_prefix: int  # ids shared by every proposition of this item (>= head)
    dropped_turns: int = 0


def common_length(a: Ids, b: Ids) -> int:
    """Length of the longest common prefix of two id tuples (halving the
    window where they first differ: slice comparisons run in C)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo]; a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


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
        # Keyed by template source and the policy's chat turns (its system message comes first).
        self._static: dict[tuple[str, str, str], Ids] = {}  # -> ids of a template's static prefix
        self._head: dict[tuple[str, ...], Ids] = {}  # the graded templates, turns -> ids all their rows start with

    def text(self, prompt: str, policy: CompiledPolicy | None = None) -> str:
        """The prompt as the grader model reads it: the user turn of a chat,
        after the policy's `system` message (when it has one: else the chat
        template's own), with the answer turn begun by its `prefill` (an answer
        cue such as "Answer:"), so the next token is the answer. Without a chat
        template the system text and the prefill go on lines of their own."""
        system, prefill = (policy.system, policy.prefill) if policy is not None else ("", "")
        if not self.chat:
            return (system + "\n\n" if system else "") + prompt + ("\n" + prefill if prefill else "")
        messages = [{"role": "system", "content": system}] if system else []
        return self.tokenizer.apply_chat_template(messages + [{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True) + prefill

    def ids(self, texts: Sequence[str]) -> list[Ids]:
        """Each text's ids, as the whole text tokenises (one batched call)."""
        if not texts:
            return []
        out = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        # A chat template writes its own special tokens into the text. Without
        # one, the prompt starts with BOS (when the tokenizer has one); nothing is
        # appended (`add_special_tokens` may also add EOS).
        bos = getattr(self.tokenizer, "bos_token_id", None)
        start: Ids = (bos,) if not self.chat and bos is not None else ()
        return [start + tuple(ids) for ids in out]

    def static_ids(self, policy: CompiledPolicy, proposition: str) -> Ids:
        """The ids of this proposition's static prefix, as far as two different
        continuations agree on them (a real row may still agree on fewer)."""
        key = (policy.proposition(proposition).template, policy.system, policy.prefill)
        if key not in self._static:
            static = policy.static_prefix(proposition)
            a, b = self.ids([self.text(static + "\x00a", policy), self.text(static + "\x01b", policy)])
            self._static[key] = a[:common_length(a, b)]
        return self._static[key]

    def graded(self, policy: CompiledPolicy) -> list[str]:
        return [p.name for p in policy.propositions if p.graded]

    def encode(self, policy: CompiledPolicy, proposition: str, conversation, response: str,
               item: int = 0) -> Encoded:
        """The exact ids graded for one row."""
        return self.encode_item(policy, conversation, response, item)[proposition]

    def encode_item(self, policy: CompiledPolicy, conversation: Sequence[Mapping[str, str]], response: str,
                    item: int = 0) -> dict[str, Encoded]:
        """Every grader proposition's ids for one item, truncating if asked and
        needed (the same turns are dropped for every proposition)."""
        return self.encode_items(policy, [conversation], [response], [item])[0]

    def encode_items(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str],
                     items: Sequence[int] | None = None) -> list[dict[str, Encoded]]:
        """`encode_item` for many items (numbered `items` in errors). Their
        prompts go to the tokenizer in large batches, which a fast tokenizer
        spreads over the CPU cores."""
        names = self.graded(policy)
        numbers = list(range(len(responses))) if items is None else list(items)
        out = []
        for start in range(0, len(responses), BATCH_ITEMS):
            chunk = range(start, min(len(responses), start + BATCH_ITEMS))
            ids = self.ids([self.text(policy.render(n, conversations[i], responses[i]), policy) for i in chunk
                            for n in names])
            for k, i in enumerate(chunk):
                rows = dict(zip(names, ids[k * len(names):(k + 1) * len(names)]))
                out.append(self._fit(policy, names, list(conversations[i]), responses[i], numbers[i], rows))
        return out

    def _fit(self, policy: CompiledPolicy, names: list[str], conversation: list, response: str, item: int,
             rows: dict[str, Ids]) -> dict[str, Encoded]:
        """The item's rows, after dropping its oldest turns while the longest
        is over the grader's context (if asked; otherwise an error)."""
        dropped = 0
        while True:
            longest = max(rows, key=lambda n: len(rows[n])) if rows else None
            if self.max_length is None or longest is None or len(rows[longest]) <= self.max_length:
                return self._shares(policy, rows, dropped)
            if self.truncate == "error" or not conversation:
                hint = ('pass `truncate="oldest_turns"` to drop the oldest turns'
                        if self.truncate == "error" else "even the response alone does not fit")
                raise GraderError(f"item {item}, proposition `{longest}`: the prompt has {len(rows[longest])} "
                                  f"tokens, more than the grader's context of {self.max_length}; {hint}",
                                  params=("truncate",))
            conversation = conversation[1:]  # never the response
            dropped += 1
            rows = dict(zip(names, self.ids([self.text(policy.render(n, conversation, response), policy)
                                             for n in names])))

    def _shares(self, policy: CompiledPolicy, rows: dict[str, Ids], dropped: int) -> dict[str, Encoded]:
        """Mark the shared prefixes of one item's rows. Every row keeps at least
        its last token unshared: the grader reads the answer there."""
        if not rows:
            return {}
        all_ids = list(rows.values())
        first = all_ids[0]
        item = max(0, min(len(r) for r in all_ids) - 1)
        for r in all_ids[1:]:
            item = min(item, common_length(first, r))
        statics = {n: self.static_ids(policy, n) for n in rows}
        key = tuple(policy.proposition(n).template for n in rows) + (policy.system, policy.prefill)
        if key not in self._head:
            head_ids = statics[next(iter(rows))]
            for s in statics.values():
                head_ids = head_ids[:common_length(head_ids, s)]
            self._head[key] = head_ids
        # The same for every row of the item: they all share `first[:item]`.
        head = min(item, common_length(first, self._head[key]))
        return {n: Encoded(r, head, max(head, min(len(r) - 1, common_length(r, statics[n]))), item, dropped)
                for n, r in rows.items()}
