"""runtime: executing the grader, its cache, and tiny test models.

One interface (`Grader`, base.py), three backends: `HFGrader` (transformers,
in process), `VLLMGrader` (vLLM's offline engine, in process), `OpenAIGrader`
(an OpenAI-compatible server such as `vllm serve`). `load_grader(model,
backend=...)` builds one by name. vLLM and httpx are imported only when a
backend that needs them is built."""
from .answers import AnswerTokens, GraderError, answer_tokens, yes_probability
from .base import BACKENDS, Grader, Grades, GradeStats, GraderWarning, load_grader
from .cache import GradeCache
from .hf import HFGrader
from .openai import OpenAIGrader
from .vllm import VLLMGrader

__all__ = ["AnswerTokens", "BACKENDS", "GradeCache", "Grader", "GraderError", "GraderWarning", "Grades", "GradeStats",
           "HFGrader", "OpenAIGrader", "VLLMGrader", "answer_tokens", "load_grader", "yes_probability"]
