"""What a request may cost the reward server, checked before the work.

A server that reads a body whole before looking at its size, or tokenizes a
megabyte response 23 times to learn that it is longer than the grader's
context, is taken down by one hostile request. So, in order of cost:

1. the body: `Content-Length` over the limit is a 413 before a byte is read;
   a body without one is read in chunks and refused (413) as soon as it passes
   the limit. Every request reserves its body's bytes from one budget before
   reading, so many large bodies at once wait for each other instead of
   filling memory (`BodyBudget`);
2. the sample count: a 413 over `max_samples`;
3. each sample's length (`LengthCheck`): a response with more characters than
   the grader's context can hold even at the tokenizer's longest token is a
   422 at once, on the event loop, in time independent of its length; a
   response under that bound but longer than the context in bytes is
   tokenized once, alone, on the grader's thread; only then is the exact
   check (`data.probabilities.too_long`, the prompts as the grader encodes
   them) run, for the few items a byte bound (their text in the longest
   prompt's frame) leaves in doubt: the common sample costs no rendering.
"""
from __future__ import annotations

import asyncio
from typing import Optional, Sequence

from ..data.probabilities import too_long
from ..errors import SampleError

MAX_BODY = 16 << 20  # bytes: OpenRLHF sends one sample a request; a context of 128k tokens is ~0.5 MiB of text
MAX_SAMPLES = 256  # per request: a larger one would be one oversized grader batch (requests are not split)
BODY_TIMEOUT_S = 60.0  # seconds from the headers to the body's last byte: 16 MiB at ~280 KB/s
BODY_BUDGET = 8  # bodies of the largest size that may be held at once (reading, parsing, waiting to be scored)


class TooLarge(Exception):
    """A body over the limit (a 413); `size` is what was declared or read so far."""

    def __init__(self, size: int, limit: int, declared: bool):
        self.size, self.limit, self.declared = size, limit, declared
        how = "declares" if declared else "has more than"
        super().__init__(f"the body {how} {size:,} bytes; the limit is {limit:,}")


class BodyBudget:
    """The bytes of request bodies held at once, bounded: `reserve(n)` waits
    until `n` bytes are free. A request reserves its whole size before reading
    (its Content-Length, or the body limit when it has none), so no two
    half-read bodies can wait for each other."""

    def __init__(self, total: int):
        self.total = self.free = int(total)
        self._changed: Optional[asyncio.Condition] = None  # made in the server's loop

    async def reserve(self, n: int) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        n = min(n, self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= n)
            self.free -= n

    async def release(self, n: int) -> None:
        n = min(n, self.total)
        async with self._changed:
            self.free += n
            self._changed.notify_all()


def declared_length(request) -> Optional[int]:
    """The request's Content-Length, or None when it sends none (chunked)."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None  # h11 refuses a malformed one before the app sees the request
    return max(0, n)


class TooSlow(Exception):
    """A body not read whole within the time allowed (a 408): a client that
    sends its headers and then trickles the body, or stops, would otherwise
    hold its share of the body budget, and a task, for as long as it likes."""

    def __init__(self, received: int, seconds: float):
        self.received, self.seconds = received, seconds
        super().__init__(f"the body was not sent within {seconds:g} s ({received:,} bytes received); "
                         "send the whole request at once")


async def read_body(request, limit: int, declared: Optional[int], timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The body, or `TooLarge` as soon as it is known to pass `limit`, or
    `TooSlow` when it is not all there `timeout_s` seconds after the headers.
    One deadline for the whole body, not one per chunk: a byte every second
    would meet any per-chunk timeout."""
    if declared is not None and declared > limit:
        raise TooLarge(declared, limit, True)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(size, limit, False)
                chunks.append(chunk)
    except TimeoutError:
        raise TooSlow(size, timeout_s) from None
    return b"".join(chunks)


class LengthCheck:
    """Refuses a sample whose prompts cannot fit the grader's context, as cheaply
    as the sample allows (see the module docstring). Does nothing for a grader
    that states no context length."""

    def __init__(self, policy, grader):
        self.policy, self.grader = policy, grader
        encoder = getattr(grader, "encoder", None)
        self.context: Optional[int] = getattr(encoder, "max_length", None)
        tokenizer = getattr(encoder, "tokenizer", None)
        self.tokenizer = tokenizer if self.context is not None else None
        # With `oldest_turns` the conversation can be cut down; the response never is.
        self.whole = getattr(encoder, "truncate", "error") == "error"
        self.max_chars: Optional[int] = None
        self.frame = 0  # bytes of the longest prompt around an empty exchange
        if self.context is not None:
            graded = [p.name for p in policy.propositions if p.graded]
            empty = [{"role": "user", "content": ""}]
            try:
                # As the grader runs it: the policy's `system` message and answer cue (`prefill`)
                # are part of every prompt, so they are part of the frame too.
                self.frame = max((len(encoder.text(policy.render(n, empty, ""), policy).encode("utf-8"))
                                  for n in graded), default=0)
            except Exception:  # a template that cannot render an empty exchange: check every sample exactly
                self.frame = self.context
        if self.tokenizer is not None:
            try:
                vocab = tokenizer.get_vocab()
            except (AttributeError, NotImplementedError):
                vocab = {}
            if vocab:
                # No token covers more characters than its vocabulary entry has (byte-level
                # BPE writes one character per byte, SentencePiece its "▁" for a space). Twice
                # that, for normalisers that drop characters: over it, no doubt is left.
                self.max_chars = 2 * max(len(t) for t in vocab) * self.context

    def _chars(self, sample) -> int:
        chars = len(sample.completion)
        if self.whole:
            chars += sum(len(m["content"]) for m in sample.conversation)
        return chars

    def _bytes(self, sample) -> int:
        text = sample.completion.encode("utf-8")
        return self.frame + len(text) + sum(len(m["content"].encode("utf-8")) + 64 for m in sample.conversation)

    def hopeless(self, samples: Sequence) -> Optional[SampleError]:
        """The first sample that cannot fit by its length in characters alone (O(1) per string)."""
        if self.max_chars is None:
            return None
        for i, sample in enumerate(samples):
            chars = self._chars(sample)
            if chars > self.max_chars:
                what = "the response has" if not self.whole else "the conversation and the response have"
                return SampleError(i, f"{what} {chars:,} characters: more than the grader's context of "
                                      f"{self.context:,} tokens can hold")
        return None

    def too_long(self, samples: Sequence) -> dict[int, str]:
        """{index: why} for the samples whose prompts the grader cannot take. Runs
        where the grader runs (its tokenizer is not shared between threads)."""
        if self.context is None or not samples:
            return {}
        out: dict[int, str] = {}
        if self.tokenizer is not None:
            # Over the context in bytes: possibly too long. The response alone, tokenized once,
            # decides most of those (a token or two of slack where it meets the template).
            big = [i for i, s in enumerate(samples) if len(s.completion.encode("utf-8")) > self.context]
            if big:
                counts = self.tokenizer([samples[i].completion for i in big], add_special_tokens=False)["input_ids"]
                for i, ids in zip(big, counts):
                    if len(ids) > self.context + 2:
                        out[i] = (f"the response alone is {len(ids):,} tokens, more than the grader's context of "
                                  f"{self.context:,}")
        # The exact check renders every prompt: only for samples that could be over the context
        # by their bytes (no token is less than a byte) in the longest prompt's frame, with room
        # for each message's markup. One it misses is refused by the grader, alone, as before.
        rest = [i for i in range(len(samples)) if i not in out and self._bytes(samples[i]) > self.context]
        problems = too_long(self.policy, self.grader, [list(samples[i].conversation) for i in rest],
                            [samples[i].completion for i in rest])
        for k, problem in problems.items():
            alone = "; even the response alone does not fit" if problem.alone > problem.limit else ""
            out[rest[k]] = problem.message + alone
        return out
