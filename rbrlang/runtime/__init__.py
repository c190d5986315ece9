"""runtime: executing the grader, its cache, and tiny test models.

One interface (`Grader`, base.py), one grading pipeline (`BaseGrader`), three
backends: `HFGrader` (transformers, in process), `VLLMGrader` (vLLM's offline
engine, in process), `OpenAIGrader` (an OpenAI-compatible server such as
`vllm serve`). `load_grader(model, backend=...)` builds one by name;
`GraderOptions` holds the options they all take.

Only what needs no torch is imported here (the CLI reads `BACKENDS` and opens
the grade cache on the base install); the graders are imported when first
asked for, and vLLM and httpx only when a backend that needs them is built."""
from ..errors import GraderError
from .cache import GradeCache
from .loading import BACKENDS, load_grader
from .options import GraderOptions

# name -> the module that defines it, imported on first use (PEP 562).
_LAZY = {"AnswerTokens": "answers", "answer_tokens": "answers", "yes_probability": "answers",
         "Grader": "base", "Grades": "base", "GradeStats": "base", "GraderWarning": "base",
         "HFGrader": "hf", "OpenAIGrader": "openai", "VLLMGrader": "vllm"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AnswerTokens", "BACKENDS", "GradeCache", "Grader", "GraderError", "GraderOptions", "GraderWarning",
           "Grades", "GradeStats", "HFGrader", "OpenAIGrader", "VLLMGrader", "answer_tokens", "load_grader",
           "yes_probability"]
