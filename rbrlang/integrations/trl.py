"""TRL GRPO and RLOO: a compiled policy as one of `reward_funcs`.

TRL (checked against trl 1.12's `GRPOTrainer._calculate_rewards` and
`RLOOTrainer`) calls each reward function as

    reward_func(prompts=[...], completions=[...], completion_ids=[...],
                <every extra dataset column>=[...], trainer_state=..., log_extra=..., log_metric=...)

with one entry per completion, and takes back one float or None per completion
(None becomes NaN: the other reward functions decide there). Prompts and
completions are plain strings, or conversational: prompts lists of messages and
completions `[{"role": "assistant", "content": …}]`. The name TRL logs rewards
under is the function's `__name__`; trainers pickle reward functions to hand
them to workers, so this is a module-level class, not a closure.

Nothing here imports TRL: the function is plain Python, usable by any trainer
that speaks this contract.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..errors import PolicyError
from ..rewards import RBRReward


class RBRRewardFunction:
    """A TRL `reward_funcs` entry: one reward per completion, None where unrouted.

    Dataset columns read (passed by TRL as keyword arguments): `response_type`
    or `category` (one of them per row; where both are given the response type
    wins), and optionally `rm_score` (a reward model score precomputed per row).
    A plain-text prompt is graded as one user message.

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
        batch = self.reward(conversations, list(completions), categories=category, response_types=response_type,
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


# Keyword arguments TRL adds that are not dataset columns.
_TRL_KWARGS = {"trainer_state", "environments", "prompt", "completion", "completion_ids"}


def as_conversation(prompt: Any, index: int = 0) -> list:
    """A TRL prompt as messages: a conversational prompt as it is, a plain one as one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)):
        return list(prompt)
    raise PolicyError(f"prompt {index}: a prompt is a string or a list of messages, not {type(prompt).__name__}")


def reward_function(policy, grader=None, rm=None, *, name: str = "rbr", log: bool = True,
                    **grader_options) -> RBRRewardFunction:
    """A picklable `reward_funcs` entry for TRL's GRPOTrainer and RLOOTrainer.

    Args:
        policy: a `CompiledPolicy`, or the path of a compiled folder.
        grader: a grader object (`HFGrader`, `VLLMGrader`, `OpenAIGrader`), or a
            model path or id loaded with `rbrlang.runtime.load_grader(grader,
            **grader_options)` (e.g. `device="cuda"`, `backend="vllm"`).
        rm: an optional reward model `(conversations, completions) -> [N]
            floats`, added to the RBR reward (and the reward alone where a
            prompt has no route). Without it, unrouted prompts get None, so
            another reward function (e.g. a reward model given to TRL) decides.
        name: the name TRL logs this reward under (`rewards/<name>/mean`).
        log: log class probabilities through TRL's `log_metric`/`log_extra`.

    Returns:
        An `RBRRewardFunction`.

    Example::

        >>> from trl import GRPOConfig, GRPOTrainer  # doctest: +SKIP
        >>> rbr = reward_function("compiled/safety", grader="path/to/grader", device="cuda")  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=..., reward_funcs=[rbr], train_dataset=dataset,  # doctest: +SKIP
        ...                       args=GRPOConfig(...))  # dataset: "prompt" plus "category" columns
    """
    return RBRRewardFunction(RBRReward.from_compiled(policy, grader, rm, **grader_options), name=name, log=log)
