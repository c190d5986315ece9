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

import os
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable

from ..errors import UsageError

GENERATOR_BACKENDS = ("hf", "vllm", "openai")


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

    def generate(self, requests: Sequence[GenerationRequest]) -> list[tuple[str, ...]]:
        """Each request's `n` replies, in order."""
        ...

    def close(self) -> None:
        ...


def load_generator(spec, backend: str = "hf", base_url: Optional[str] = None,
                   settings: Optional[GenerationSettings] = None, **kwargs) -> Generator:
    """A generator by name: `HFGenerator(spec)` (a local folder or hub id),
    `VLLMGenerator(spec)`, or `OpenAIGenerator(base_url, spec)` (a server
    serving model `spec`). A generator object is returned as it is."""
    if not isinstance(spec, (str, os.PathLike)):
        if isinstance(spec, Generator):
            return spec
        raise UsageError(f"a generator is a model name or path, or a generator object; got {type(spec).__name__}")
    if backend not in GENERATOR_BACKENDS:
        raise UsageError(f"unknown generator backend {backend!r}; choose one of {', '.join(GENERATOR_BACKENDS)}")
    settings = settings or GenerationSettings()
    if backend != "openai" and base_url is not None:
        raise UsageError(f"a base URL is for the `openai` backend (a server); backend {backend!r} runs the model here")
    if backend == "hf":
        from .hf import HFGenerator

        return HFGenerator(str(spec), settings, **kwargs)
    if backend == "vllm":
        from .vllm import VLLMGenerator

        return VLLMGenerator(str(spec), settings, **kwargs)
    if base_url is None:
        raise UsageError("the `openai` generator backend needs the server's base URL (http://HOST:PORT/v1)")
    from .openai import OpenAIGenerator

    return OpenAIGenerator(base_url, str(spec), settings, **kwargs)
