"""`load_grader`: a grader by backend name, and the names (`BACKENDS`);
`choose_backend`: what `auto` runs.

Apart from base.py so that nothing imports in a circle: the backends import
base.py, and this module imports the backends, each only when it is asked
for (vLLM and httpx are optional). No torch at import: the CLI reads
`BACKENDS` for its parser on an install without the grader extra.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import TYPE_CHECKING, Optional

from ..errors import UsageError

if TYPE_CHECKING:
    from .base import Grader

BACKENDS = ("hf", "vllm", "openai", "auto")
# `auto` sends a job of at least this many (item, proposition) prompts to vLLM on
# a GPU: below it, an engine's start (weights, graph capture: tens of seconds on a
# GPU) costs more than its speed saves against HFGrader. Unknown size (a server,
# a library call without `prompts`) counts as large.
AUTO_VLLM_MIN_PROMPTS = 2048

log = logging.getLogger("rbrlang")


def choose_backend(prompts: Optional[int] = None, device: Optional[str] = None,
                   model: Optional[str] = None) -> tuple[str, str]:
    """What `backend="auto"` runs, and why in a few words: vLLM where it is
    installed, a CUDA GPU is here (and `device`, if given, is one), the model is
    no GGUF file (vLLM 0.32 has no GGUF loader) and the job is large (`prompts`
    at least AUTO_VLLM_MIN_PROMPTS, or unknown); HF otherwise."""
    from .gguf import is_gguf

    if model is not None and is_gguf(model):
        return "hf", "a GGUF file"
    if device not in (None, "auto") and not str(device).startswith("cuda"):
        return "hf", f"--device {device}"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "vLLM is not installed"
    import torch

    if not torch.cuda.is_available():
        return "hf", "no CUDA GPU here"
    if prompts is not None and prompts < AUTO_VLLM_MIN_PROMPTS:
        return "hf", f"a small job: {prompts} prompts, under {AUTO_VLLM_MIN_PROMPTS}"
    size = "size unknown" if prompts is None else f"{prompts} prompts"
    return "vllm", f"vLLM and a CUDA GPU ({torch.cuda.get_device_name()}) here, a large job ({size})"


def load_grader(spec, backend: str = "hf", base_url: Optional[str] = None, *, prompts: Optional[int] = None,
                **kwargs) -> "Grader":
    """A grader by name.

    - `backend="hf"`: `HFGrader.from_pretrained(spec, **kwargs)` (a local folder, a
      GGUF file `….gguf`, dequantised as it loads, or a hub id);
    - `backend="vllm"`: `VLLMGrader(spec, **kwargs)`, vLLM's offline engine on that model;
    - `backend="openai"`: `OpenAIGrader(base_url, spec, **kwargs)`, a running
      OpenAI-compatible server serving model `spec` (which also names the
      tokenizer unless `tokenizer=` is given);
    - `backend="auto"`: hf or vllm, as `choose_backend(prompts, kwargs' device)`
      says (logged at INFO on the `rbrlang` logger); the grade cache keys on the
      grader built, so each backend's grades are kept apart.

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
    if backend == "auto":
        backend, why = choose_backend(prompts, kwargs.get("device"), spec)
        log.info("grader backend auto: %s (%s)", backend, why)
        if backend == "vllm":
            kwargs.pop("device", None)  # vLLM places its own model
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


__all__ = ["AUTO_VLLM_MIN_PROMPTS", "BACKENDS", "choose_backend", "load_grader"]
