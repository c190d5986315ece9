"""TRL GRPO and RLOO: a compiled policy as one of `reward_funcs`.

TRL (checked against the released trl 1.12 and 1.16: `GRPOTrainer._calculate_rewards`,
`RLOOTrainer._calculate_rewards`) calls each reward function as

    reward_func(prompts=[...], completions=[...], completion_ids=[...],
                <every extra dataset column>=[...], trainer_state=..., log_extra=..., log_metric=...)

with one entry per completion, and takes back one float or None per completion
(None becomes NaN: the other reward functions decide there). Prompts and
completions are plain strings, or conversational: prompts lists of messages and
completions `[{"role": "assistant", "content": …}]`; with tools (`GRPOTrainer(tools=...)`,
in 1.12 and 1.16 alike) a completion is the whole turn: assistant messages with
`tool_calls`, `{"role": "tool", ...}` results, and the final assistant reply.
The name TRL logs rewards under is the function's `__name__`; trainers pickle
reward functions to hand them to workers, so this is a module-level class, not
a closure.

Async: trl ≥ 1.14 (`trl.trainer.utils.is_async_callable`, new in 1.14.0) awaits a reward
function whose `__call__` is `async`, concurrently with its other async
reward functions (TRL's async GRPO, in its rollout worker, with other
rollouts). trl 1.12 tests `inspect.iscoroutinefunction(func)`, which is False
for any callable object, and would call it synchronously and get a coroutine:
`reward_function` gives the async form only where the installed trl awaits it.

Nothing here imports TRL: the function is plain Python, usable by any trainer
that speaks this contract.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import os
from typing import Any, Mapping, Optional, Sequence

from ..errors import ConversationError, PolicyError
from ..rewards import RBRReward


class RBRRewardFunction:
    """A TRL `reward_funcs` entry: one reward per completion, None where unrouted.

    Dataset columns read (passed by TRL as keyword arguments): `response_type`
    or `category` (one of them per row; where both are given the response type
    wins), and optionally `rm_score` (a reward model score precomputed per row).
    A plain-text prompt is graded as one user message.

    What is graded of a completion: its final assistant reply (`reply_text`).
    With tools that is the assistant's text after the last tool result, judged
    against the prompt's conversation: a policy's propositions judge what the
    user reads (a refusal, its tone, a disclaimer), and the tool calls and
    results before it are the model's working, which the user does not see
    (and a tool result may be large, or images).

    Logging, where the trainer offers it (TRL passes `log_metric`/`log_extra`):
    `rbr/<response type>/<class>` the mean class probability over the batch's
    completions of that response type, `rbr/routed` the fraction of completions
    with a route, and the completions-table columns `rbr_response_type` and
    `rbr_class` (the most probable class).
    """

    def __init__(self, reward: RBRReward, name: str = "rbr", log: bool = True):
        self.reward = reward
        self.__name__ = name
        self.log = log

    def __repr__(self) -> str:
        return f"RBRRewardFunction({self.__name__!r}, {self.reward!r})"

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, *,
                 category: Optional[Sequence] = None, response_type: Optional[Sequence] = None,
                 rm_score: Optional[Sequence] = None, log_metric=None, log_extra=None,
                 **_columns: Any) -> list[Optional[float]]:
        if category is None and response_type is None:
            raise PolicyError("the RBR reward needs a `category` or `response_type` column in the training dataset "
                              f"(one per prompt) to route each prompt; the dataset's extra columns were: "
                              f"{', '.join(sorted(k for k in _columns if k not in _TRL_KWARGS)) or 'none'}")
        conversations = [as_conversation(p, i) for i, p in enumerate(prompts)]
        texts = [reply_text(c, i) for i, c in enumerate(completions)]
        batch = self.reward(conversations, texts, categories=category, response_types=response_type,
                            rm_scores=rm_score)
        if self.log:
            self._log(batch, log_metric, log_extra)
        # TRL takes None (as NaN: the other reward functions decide): the unrouted rule's None form.
        return list(batch.rewards)

    @staticmethod
    def _log(batch, log_metric, log_extra) -> None:
        if log_metric is not None and len(batch):
            log_metric("rbr/routed", sum(rt is not None for rt in batch.response_types) / len(batch))
            for rt, means in batch.mean_class_probabilities().items():
                for cls, p in means.items():
                    log_metric(f"rbr/{rt}/{cls}", p)
        if log_extra is not None:
            log_extra("rbr_response_type", [rt or "" for rt in batch.response_types])
            log_extra("rbr_class", [max(cp, key=cp.get) if cp else "" for cp in batch.class_probabilities])


class AsyncRBRRewardFunction(RBRRewardFunction):
    """`RBRRewardFunction` with an `async` `__call__`, for trl ≥ 1.14, which awaits it.

    The grading runs on a worker thread (`asyncio.to_thread`), so TRL's event
    loop runs its other async reward functions, and in async GRPO other
    rollouts, while a served judge (`OpenAIGrader`) answers. Use it with a
    served grader; a grader in this process gains nothing from it."""

    async def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, **kwargs: Any):
        return await asyncio.to_thread(super().__call__, prompts, completions, completion_ids, **kwargs)


# Keyword arguments TRL adds that are not dataset columns.
_TRL_KWARGS = {"trainer_state", "environments", "prompt", "completion", "completion_ids"}


def reply_text(completion: Any, index: int = 0) -> str:
    """The text graded of one TRL completion: a string as it is; messages: the
    final assistant reply, i.e. the assistant messages after the last tool
    result (all of them when there is none), their text joined. A turn that
    ends on a tool result (cut off by the length limit) has no reply: "".

    >>> reply_text([{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
    ...             {"role": "tool", "name": "f", "content": "42"},
    ...             {"role": "assistant", "content": "It is 42."}])
    'It is 42.'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if hasattr(completion, "tolist") and not isinstance(completion, (list, tuple)):
        completion = completion.tolist()
    if not isinstance(completion, (list, tuple)) or not all(isinstance(m, Mapping) for m in completion):
        raise ConversationError(f"completion {index}: a completion is a string or a list of messages, "
                                f"not {type(completion).__name__}")
    last_tool = max((k for k, m in enumerate(completion) if m.get("role") == "tool"), default=-1)
    parts = []
    for k, m in enumerate(completion[last_tool + 1:], last_tool + 1):
        if m.get("role") != "assistant":
            raise ConversationError(f"completion {index}: message {k} has role {m.get('role')!r}; after the last "
                                    "tool result a completion holds the assistant's reply")
        content = m.get("content")
        if content is None:  # an assistant message that only calls tools
            continue
        if not isinstance(content, str):
            raise ConversationError(f"completion {index}: message {k}'s `content` must be a string, "
                                    f"not {type(content).__name__}")
        parts.append(content)
    return "".join(parts)


def trl_awaits_async_callables() -> bool:
    """Whether the installed trl awaits an object with an async `__call__` (`is_async_callable`, trl ≥ 1.14)."""
    try:
        version = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        return False
    import re

    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    return numbers >= (1, 14)


def as_conversation(prompt: Any, index: int = 0) -> list:
    """A TRL prompt as messages: a conversational prompt as it is, a plain one as one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)):
        return list(prompt)
    raise PolicyError(f"prompt {index}: a prompt is a string or a list of messages, not {type(prompt).__name__}")


def reward_function(policy, grader=None, rm=None, *, name: str = "rbr", log: bool = True,
                    asynchronous: Optional[bool] = None, **grader_options) -> RBRRewardFunction:
    """A picklable `reward_funcs` entry for TRL's GRPOTrainer, RLOOTrainer and
    OnlineDPOTrainer (`trl.experimental.online_dpo`, which takes `reward_funcs` too,
    but never awaits one: give it `asynchronous=False`).

    Args:
        policy: a `CompiledPolicy`, or the path of a compiled folder.
        grader: a model path or id, loaded with `rbrlang.runtime.load_grader(grader,
            **grader_options)` (e.g. `device="cuda"`, `backend="vllm"`,
            `backend="openai", base_url=...`) lazily: at the first grade, in the
            process that grades (`LazyGrader`: a pickled copy carries these
            arguments, not weights). Or a grader object (`HFGrader`,
            `VLLMGrader`, `OpenAIGrader`), used as it is (and pickled as it is).
        rm: an optional reward model `(conversations, completions) -> [N]
            floats`, added to the RBR reward (and the reward alone where a
            prompt has no route). Without it, unrouted prompts get None, so
            another reward function (e.g. a reward model given to TRL) decides.
        name: the name TRL logs this reward under (`rewards/<name>/mean`).
        log: log class probabilities through TRL's `log_metric`/`log_extra`.
        asynchronous: give `AsyncRBRRewardFunction` (awaited by trl ≥ 1.14). None
            (default): when the grader is served (`backend="openai"` or an
            `OpenAIGrader`) and the installed trl awaits it; True where trl
            does not is an error (trl 1.12 would not await it).

    Returns:
        An `RBRRewardFunction` (or `AsyncRBRRewardFunction`).

    Example::

        >>> from trl import GRPOConfig, GRPOTrainer  # doctest: +SKIP
        >>> rbr = reward_function("compiled/safety", grader="path/to/grader", device="cuda")  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=..., reward_funcs=[rbr], train_dataset=dataset,  # doctest: +SKIP
        ...                       args=GRPOConfig(...))  # dataset: "prompt" plus "category" columns
    """
    from .loading import LazyGrader

    if isinstance(grader, (str, os.PathLike)):
        grader = LazyGrader(grader, **grader_options)
    elif grader_options:
        raise PolicyError(f"grader options {sorted(grader_options)} apply only when `grader` is a model path")
    served = getattr(grader, "backend", None) == "openai" or type(grader).__name__ == "OpenAIGrader"
    awaited = trl_awaits_async_callables()
    if asynchronous and not awaited:
        raise PolicyError("an async reward function needs trl >= 1.14 (it awaits reward functions whose "
                          "__call__ is async; older trl would call it without awaiting): upgrade trl, or "
                          "leave `asynchronous` unset")
    if asynchronous is None:
        asynchronous = served and awaited
    cls = AsyncRBRRewardFunction if asynchronous else RBRRewardFunction
    return cls(RBRReward(policy, grader, rm), name=name, log=log)
