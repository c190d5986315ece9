"""`load_generator`: a generator by backend name, and the names.

Apart from base.py so that nothing imports in a circle: the backends import
base.py, and this module imports the backends, each only when asked for."""
from __future__ import annotations

import os
from typing import Optional

from ..errors import UsageError
from .base import GenerationSettings, Generator

GENERATOR_BACKENDS = ("hf", "vllm", "openai")


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
