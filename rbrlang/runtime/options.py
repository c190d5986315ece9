"""The options every grader backend takes, in one object.

`HFGrader`, `VLLMGrader` and `OpenAIGrader` each also take options of their
own (a token budget, engine settings, a server's URL); these are the ones they
share, read in one place (`base.BaseGrader`). A caller builds them once
(`rbrc`'s grader options do, in cli/grader_args.py) and hands them to any
backend as `options=`; the same names also work as keyword arguments
(`HFGrader(model, tokenizer, cache=path)`), which replace the object's fields.

No torch here: the CLI imports this module to build its parser.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

if TYPE_CHECKING:
    from .cache import GradeCache


@dataclass(frozen=True)
class GraderOptions:
    """What changes how any backend builds its prompts and treats its answers.

    Args:
        use_chat_template: wrap each prompt in the tokenizer's chat template;
            None: when the tokenizer has one.
        max_length: the longest prompt, in tokens; None: the model's context
            (hf, vllm) or the server's (openai), less the answer token.
        truncate: a prompt longer than that: "error", or "oldest_turns" (drop
            the conversation's oldest turns until it fits).
        cache: the grade cache: a `GradeCache`, the path of one, or None.
        min_answer_mass: below this share of next-token probability on the
            yes/no tokens, a `GraderWarning` is given.
    """

    use_chat_template: Optional[bool] = None
    max_length: Optional[int] = None
    truncate: str = "error"
    cache: Union["GradeCache", str, Path, None] = None
    min_answer_mass: float = 0.5

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, options: Optional["GraderOptions"] = None, **values: Any) -> "GraderOptions":
        """`options` (or the defaults) with `values` in place of its fields: a
        backend's keyword arguments win over the object it was given."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:  # what Python says for a keyword a function does not take
            raise TypeError(f"unexpected keyword argument {unknown[0]!r} (grader options: {', '.join(cls.names())})")
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a GraderOptions; got {type(options).__name__}")
        return replace(options or cls(), **values)

    @classmethod
    def split(cls, values: Mapping[str, Any]) -> tuple[dict, dict]:
        """(the grader options among `values`, everything else), for a backend
        that passes the rest on (vLLM's engine arguments)."""
        ours = {k: v for k, v in values.items() if k in cls.names()}
        return ours, {k: v for k, v in values.items() if k not in ours}


__all__ = ["GraderOptions"]
