"""What the Ray-engine integrations share: one sample to score, its reward, and
scoring a batch of samples with an `RBRReward`.

OpenRLHF (`openrlhf.py`, the server in `rbrlang.serve`) and veRL (`verl.py`)
each turn their engine's inputs into `Sample`s and their engine's outputs from
`ItemReward`s; the scoring in between is this one function, so the server, the
OpenRLHF `reward_func` file and veRL's `compute_score` give the same number for
the same sample.

Both engines need a number for every sample (OpenRLHF puts it in a tensor,
veRL writes it into the reward tensor), so a sample whose category has no route
gets, by the unrouted rule (`rbrlang.rewards.unrouted_reward`), its reward
model score when there is a reward model, else `unrouted_reward` (0.0 unless
configured), and `routed` says which it was (logged as `rbr_routed`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..data.jsonl import JSONTextError, parse_json
from ..data.records import checked_conversation
from ..errors import ConversationError, PolicyError, SampleError
from ..rewards.reward import UNROUTED_REWARD


# What OpenRLHF answers' `scores` can be (`openrlhf.answer`, `loading.scores_setting`).
SCORES = ("reward", "class_score")


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

    total: `RBRReward`'s reward: RBR (+ RM) where routed; the RM score where
        not, or None without an RM (`number` turns that into the engine's number).
    rbr: the policy's reward alone (0.0 where unrouted).
    rm: the reward model's score, or None without a reward model.
    routed: whether the sample's category has a response type.
    response_type: that response type, or None.
    class_score: the expected class score, Σ_c P(class c) · score(c) with the
        policy's class scores (in [0, 1] unless the author set others): the
        reward before any fit, and a score for OpenRLHF's dynamic filtering
        whatever the fitted weights' scale. None where unrouted.
    class_probabilities: `{class: probability}` (best class first), None where unrouted.
    """

    total: Optional[float]
    rbr: float
    rm: Optional[float]
    routed: bool
    response_type: Optional[str]
    class_score: Optional[float] = None
    class_probabilities: Optional[dict] = None

    def number(self, unrouted: float = UNROUTED_REWARD) -> float:
        """The reward as a number (the engines need one): `unrouted` where the
        sample has no route and there is no RM (`rbrlang.rewards.unrouted_reward`)."""
        return float(unrouted if self.total is None else self.total)


def conversation_from(value: Any, index: int, what: str = "messages") -> tuple:
    """A conversation given as a list of messages, or as that list's JSON text.

    Datasets often keep nested messages as a JSON string (parquet schemas, label
    columns), and readers give lists back as arrays: both are accepted."""
    if isinstance(value, str):
        try:
            value = parse_json(value)
        except JSONTextError as exc:
            raise SampleError(index, f"`{what}` is a string that is not JSON messages ({exc.message} at "
                                     f"character {exc.position})") from None
    try:
        return tuple(checked_conversation(value))
    except ConversationError as exc:
        raise SampleError(index, f"`{what}`: {exc}") from None


def check_route(policy, sample: Sample, index: int) -> None:
    """Fail early (before batching) on a sample with no route key or an unknown
    response type (the rule: `CompiledPolicy.route_item`)."""
    if sample.category is None and sample.response_type is None:
        raise SampleError(index, "no `category` or `response_type`: the policy cannot route it")
    try:
        policy.route_item(response_type=sample.response_type, category=sample.category)
    except PolicyError as exc:
        raise SampleError(index, str(exc)) from None


def score_samples(reward, samples: Sequence[Sample]) -> list[ItemReward]:
    """Score samples with an `RBRReward` in one call (one grader batch); the
    engine's number for an unrouted sample is `ItemReward.number`."""
    if not samples:
        return []
    batch = reward([list(s.conversation) for s in samples], [s.completion for s in samples],
                   categories=[s.category for s in samples], response_types=[s.response_type for s in samples])
    return [ItemReward(total=None if total is None else float(total), rbr=float(rbr) if rt is not None else 0.0,
                       rm=None if rm is None else float(rm), routed=rt is not None, response_type=rt,
                       class_score=None if rt is None else expected_class_score(reward.policy, rt, probs),
                       class_probabilities=None if rt is None else dict(probs))
            for total, rbr, rm, rt, probs in zip(batch.rewards, batch.rbr, batch.rm, batch.response_types,
                                                 batch.class_probabilities)]


def expected_class_score(policy, response_type: str, class_probabilities: dict) -> float:
    """Σ_c P(class c) · score(c), the policy's class scores (`ResponseType.scores`)."""
    rt = policy.response_type(response_type)
    return float(sum(class_probabilities[c] * s for c, s in zip(rt.classes, rt.scores)))


def extra_logs(items: Sequence[ItemReward], has_rm: bool) -> dict[str, list[float]]:
    """Per-sample numbers to log beside the reward, the same keys for every sample
    (engines stack them per key): `rbr_routed` (1/0), `rbr` (the policy's reward
    alone), and `rm` when there is a reward model."""
    logs = {"rbr_routed": [1.0 if i.routed else 0.0 for i in items], "rbr": [i.rbr for i in items]}
    if has_rm:
        logs["rm"] = [0.0 if i.rm is None else i.rm for i in items]
    return logs
