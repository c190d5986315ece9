"""What the Ray-engine integrations share: one sample to score, its reward, and
scoring a batch of samples with an `RBRReward`.

OpenRLHF (`openrlhf.py`, the server in `rbrlang.serve`) and veRL (`verl.py`)
each turn their engine's inputs into `Sample`s and their engine's outputs from
`ItemReward`s; the scoring in between is this one function, so the server, the
OpenRLHF `reward_func` file and veRL's `compute_score` give the same number for
the same sample.

Both engines need a number for every sample (OpenRLHF puts it in a tensor,
veRL writes it into the reward tensor), so a sample whose category has no route
gets its reward model score when there is a reward model, else 0.0, and
`routed` says which it was (logged as `rbr_routed`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..errors import ConversationError, PolicyError, SampleError
from ..policy.rendering import check_conversation


@dataclass(frozen=True)
class Sample:
    """One (conversation, completion) to score and how to route it.

    conversation: the messages before the completion, as the grader sees them.
    completion: the policy model's response text.
    category / response_type: the route (a response type wins over a category).
    source: where the conversation came from: "messages" (given as messages) or
        "prompt" (the engine's formatted prompt text as one user message).
    """

    conversation: tuple
    completion: str
    category: Optional[str] = None
    response_type: Optional[str] = None
    source: str = "messages"


@dataclass(frozen=True)
class ItemReward:
    """One sample's reward as both engines take it.

    reward: RBR (+ RM) where routed; the RM score or 0.0 where not.
    rbr: the policy's reward alone (0.0 where unrouted).
    rm: the reward model's score, or None without a reward model.
    routed: whether the sample's category has a response type.
    response_type: that response type, or None.
    """

    reward: float
    rbr: float
    rm: Optional[float]
    routed: bool
    response_type: Optional[str]


def conversation_from(value: Any, index: int, what: str = "messages") -> tuple:
    """A conversation given as a list of messages, or as that list's JSON text.

    Datasets often keep nested messages as a JSON string (parquet schemas, label
    columns), and readers give lists back as arrays: both are accepted."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SampleError(index, f"`{what}` is a string that is not JSON messages ({exc.msg} at "
                                     f"character {exc.pos})") from None
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # numpy arrays from parquet readers
        value = value.tolist()
    try:
        check_conversation(value)
    except ConversationError as exc:
        raise SampleError(index, f"`{what}`: {exc}") from None
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def check_route(policy, sample: Sample, index: int) -> None:
    """Fail early (before batching) on a sample with no route key or an unknown response type."""
    if sample.category is None and sample.response_type is None:
        raise SampleError(index, "no `category` or `response_type`: the policy cannot route it")
    if sample.response_type is not None:
        try:
            policy.response_type(sample.response_type)
        except PolicyError as exc:
            raise SampleError(index, str(exc)) from None


def score_samples(reward, samples: Sequence[Sample]) -> list[ItemReward]:
    """Score samples with an `RBRReward` in one call (one grader batch).

    An unrouted sample's reward is its RM score when the reward has an RM,
    else 0.0 (engines need a number; see the module docstring)."""
    if not samples:
        return []
    batch = reward([list(s.conversation) for s in samples], [s.completion for s in samples],
                   categories=[s.category for s in samples], response_types=[s.response_type for s in samples])
    out = []
    for total, rbr, rm, rt in zip(batch.rewards, batch.rbr, batch.rm, batch.response_types):
        routed = rt is not None
        value = total if total is not None else 0.0
        out.append(ItemReward(reward=float(value), rbr=float(rbr) if routed else 0.0,
                              rm=None if rm is None else float(rm), routed=routed, response_type=rt))
    return out


def extra_logs(items: Sequence[ItemReward], has_rm: bool) -> dict[str, list[float]]:
    """Per-sample numbers to log beside the reward, the same keys for every sample
    (engines stack them per key): `rbr_routed` (1/0), `rbr` (the policy's reward
    alone), and `rm` when there is a reward model."""
    logs = {"rbr_routed": [1.0 if i.routed else 0.0 for i in items], "rbr": [i.rbr for i in items]}
    if has_rm:
        logs["rm"] = [0.0 if i.rm is None else i.rm for i in items]
    return logs
