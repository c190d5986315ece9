"""One generator interface: chat messages in, `n` sampled replies out, from a seed.

A request is one conversation (the class instruction already in it) and how
many replies to sample from one seed: vLLM's `SamplingParams(n=K, seed=S)`,
transformers' `generate(num_return_sequences=K)` after seeding torch, a chat
server's `n` and `seed`. Same request, same generator identity: the same
replies, which is what lets `rbrc synth` cache them and resume.

`identity` names everything that changes what comes out (backend, model and
its files, the sampling settings); synth's cache keys on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable

@dataclass(frozen=True)
class GenerationSettings:
    """How replies are sampled. temperature 0: greedy (every sample the same)."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0

    def to_json(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p}


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Mapping[str, str], ...]  # {"role", "content"}, ending before the reply
    n: int  # replies to sample
    seed: int


@runtime_checkable
class Generator(Protocol):
    identity: str
    settings: GenerationSettings
    batch_size: int  # requests one `generate` call takes well (callers cache between calls)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[tuple[str, ...]]:
        """Each request's `n` replies, in order."""
        ...

    def close(self) -> None:
        ...
