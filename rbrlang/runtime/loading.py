"""`load_grader`: a grader by backend name, and the names (`BACKENDS`).

Apart from base.py so that nothing imports in a circle: the backends import
base.py, and this module imports the backends, each only when it is asked
for (vLLM and httpx are optional). No torch at import: the CLI reads
`BACKENDS` for its parser on an install without the grader extra.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from ..errors import UsageError

if TYPE_CHECKING:
    from .base import Grader

BACKENDS = ("hf", "vllm", "openai")


def load_grader(spec, backend: str = "hf", base_url: Optional[str] = None, **kwargs) -> "Grader":
    """A grader by name.

    - `backend="hf"`: `HFGrader.from_pretrained(spec, **kwargs)` (a local folder, a
      GGUF file `….gguf`, dequantised as it loads, or a hub id);
    - `backend="vllm"`: `VLLMGrader(spec, **kwargs)`, vLLM's offline engine on that model;
    - `backend="openai"`: `OpenAIGrader(base_url, spec, **kwargs)`, a running
      OpenAI-compatible server serving model `spec` (which also names the
      tokenizer unless `tokenizer=` is given).

    Every backend takes `options=` (a `GraderOptions`) and its fields as
    keyword arguments. A grader object (anything with `grade_detailed`) is
    returned as it is.
    """
    if not isinstance(spec, (str, os.PathLike)):
        from .base import Grader

        if isinstance(spec, Grader):
            return spec
        raise UsageError(f"a grader is a model name or path, or a grader object; got {type(spec).__name__}")
    if backend not in BACKENDS:
        raise UsageError(f"unknown grader backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "openai" and base_url is not None:
        raise UsageError(f"a base URL is for the `openai` backend (a server); backend {backend!r} runs the model here")
    if backend == "hf":
        from .hf import HFGrader

        return HFGrader.from_pretrained(str(spec), **kwargs)
    if backend == "vllm":
        from .vllm import VLLMGrader

        return VLLMGrader(str(spec), **kwargs)
    if base_url is None:
        raise UsageError("the `openai` backend needs the server's base URL (`base_url`, e.g. http://HOST:PORT/v1)", params=("base_url",))
    from .openai import OpenAIGrader

    return OpenAIGrader(base_url, str(spec), **kwargs)


__all__ = ["BACKENDS", "load_grader"]
