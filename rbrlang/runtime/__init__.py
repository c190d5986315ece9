"""runtime: executing the grader (transformers), its cache, and tiny test models."""
from .answers import AnswerTokens, GraderError, answer_tokens, yes_probability
from .cache import GradeCache
from .hf import Grades, GradeStats, GraderWarning, HFGrader

__all__ = ["AnswerTokens", "GradeCache", "GraderError", "GraderWarning", "Grades", "GradeStats", "HFGrader",
           "answer_tokens", "yes_probability"]
