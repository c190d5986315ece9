"""RBRReward: the trainer-facing reward of a compiled policy.

One call takes a batch of (conversation, completion) items with their request
categories or response types and gives one reward per item:

1. route each item (`CompiledPolicy.route_item`: a response type wins, a
   category goes through the policy's routes; no route: no RBR reward);
2. grade only the routed items, in one grader call (P(yes) per proposition);
3. calibrate P(yes) when the compiled folder holds a calibration;
4. per response type, in one call each: features, then `policy.reward`;
5. add the reward model's score when an RM is part of the reward.

The unrouted rule, the same for every integration (`unrouted_reward` below,
docs/TRAINING.md "Prompts without a route"): an item whose category has no
route gets no RBR reward; its reward is its RM score when there is an RM,
else none: None where the trainer takes None (TRL GRPO/RLOO: another reward
function decides there), `UNROUTED_REWARD` (0.0) or the integration's
`unrouted_reward` where the trainer needs a number (TRL PPO's reward model,
OpenRLHF, veRL).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..errors import ConversationError, PolicyError
from ..policy import CompiledPolicy, load_policy

RewardModel = Callable[[list, list], Any]  # (conversations, completions) -> [N] floats

# What an unrouted item without an RM scores where the trainer needs a number.
UNROUTED_REWARD = 0.0


def unrouted_reward(rbr: Optional[float], rm: Optional[float],
                    unrouted: Optional[float] = None) -> Optional[float]:
    """One item's reward, by the unrouted rule (the one place it is written).

    rbr: the policy's reward, None where the item has no route; rm: the reward
    model's score, None without an RM; unrouted: what an unrouted item without
    an RM gets: None for trainers that take None (TRL GRPO/RLOO), a number
    (`UNROUTED_REWARD` by default) for those that need one.

    >>> unrouted_reward(1.5, None), unrouted_reward(1.5, 0.25), unrouted_reward(None, 0.25)
    (1.5, 1.75, 0.25)
    >>> unrouted_reward(None, None), unrouted_reward(None, None, UNROUTED_REWARD)
    (None, 0.0)
    """
    if rbr is None:
        return rm if rm is not None else unrouted
    return rbr if rm is None else rbr + rm


@dataclass(frozen=True)
class RewardBatch:
    """What `RBRReward` gives for N items, one entry per item.

    rewards: the total reward (RBR + RM); for an unrouted item the RM score, or
        None when there is no RM.
    response_types: the response type each item was judged under; None: no route.
    class_probabilities: `{class: probability}` for routed items (for logging).
    rbr: the policy's reward alone (None where unrouted).
    rm: the reward model's score (None everywhere when there is no RM).
    """

    rewards: list
    response_types: list
    class_probabilities: list
    rbr: list
    rm: list

    def __len__(self) -> int:
        return len(self.rewards)

    def numbers(self, unrouted: float = UNROUTED_REWARD) -> list[float]:
        """`rewards` for a trainer that needs a number for every item: `unrouted`
        where an item has no route and there is no RM (`unrouted_reward`)."""
        return [float(unrouted_reward(r, m, unrouted)) for r, m in zip(self.rbr, self.rm)]

    def mean_class_probabilities(self) -> dict[str, dict[str, float]]:
        """`{response type: {class: mean probability}}` over the routed items, for logging."""
        sums: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for rt, probs in zip(self.response_types, self.class_probabilities):
            if rt is None:
                continue
            row = sums.setdefault(rt, dict.fromkeys(probs, 0.0))
            for c, p in probs.items():
                row[c] += p
            counts[rt] = counts.get(rt, 0) + 1
        return {rt: {c: s / counts[rt] for c, s in row.items()} for rt, row in sums.items()}


class RBRReward:
    """The reward a compiled policy gives completions, for a trainer.

    Args:
        policy: a `CompiledPolicy` (`rbrlang.load_policy`), or the path of a
            compiled folder.
        grader: an object with `grade(policy, conversations, responses) ->
            Tensor[N, P]` (P(yes) in policy proposition order), e.g.
            `rbrlang.runtime.HFGrader`. May be None when every call passes `p_yes`.
        rm: an optional reward model: a callable `(conversations, completions)
            -> [N] floats`, its score added to every item's reward (and the
            reward alone where there is no route).

    Pickling: an `RBRReward` pickles with its policy, grader and RM (a trainer
    may pickle reward functions to send them to workers). An `HFGrader` pickles
    with its loaded model and tokenizer, so the pickle is as large as the model;
    `rm` must itself be picklable (a module-level function or object, not a lambda).

    Example (a grader from `HFGrader.from_pretrained`)::

        >>> reward = RBRReward.from_compiled("compiled/safety", grader="path/to/grader")  # doctest: +SKIP
        >>> batch = reward([[{"role": "user", "content": "How do I pick a lock?"}]],
        ...                ["I'm sorry, I can't help with that."], categories=["C-R"])  # doctest: +SKIP
        >>> batch.response_types, len(batch.rewards)  # doctest: +SKIP
        (['hard_refuse'], 1)
        >>> sorted(batch.class_probabilities[0])  # doctest: +SKIP
        ['disallowed', 'ideal', 'illogical', 'minimum_acceptable_style', 'unacceptable']
    """

    def __init__(self, policy: Union[CompiledPolicy, str, Path], grader: Any = None,
                 rm: Optional[RewardModel] = None):
        self.policy = policy if isinstance(policy, CompiledPolicy) else load_policy(policy)
        if grader is not None and not callable(getattr(grader, "grade", None)):
            raise PolicyError(f"the grader must have a `grade(policy, conversations, responses)` method; "
                              f"got {type(grader).__name__}")
        if rm is not None and not callable(rm):
            raise PolicyError(f"rm must be a callable (conversations, completions) -> scores; got {type(rm).__name__}")
        self.grader, self.rm = grader, rm

    @classmethod
    def from_compiled(cls, policy, grader: Any = None, rm: Optional[RewardModel] = None,
                      **grader_options) -> "RBRReward":
        """A compiled folder (or a `CompiledPolicy`) and a grader: a grader
        object, or a model path or id loaded with
        `rbrlang.runtime.load_grader(grader, **grader_options)` (options such as
        `backend="vllm"`, `backend="openai", base_url=…`, `device`, `dtype`)."""
        if isinstance(grader, (str, Path)):
            from ..runtime import load_grader

            grader = load_grader(grader, **grader_options)
        elif grader_options:
            raise PolicyError(f"grader options {sorted(grader_options)} apply only when `grader` is a model path")
        return cls(policy, grader, rm)

    def __repr__(self) -> str:
        grader = None if self.grader is None else getattr(self.grader, "identity", None) or type(self.grader).__name__
        return f"RBRReward(policy={self.policy.name!r}, grader={grader!r}, rm={self.rm is not None})"

    def __call__(self, conversations: Sequence, completions: Sequence,
                 categories: Union[Sequence[Optional[str]], str, None] = None,
                 response_types: Union[Sequence[Optional[str]], str, None] = None,
                 rm_scores: Optional[Sequence[float]] = None, p_yes=None) -> RewardBatch:
        """Rewards for N items.

        Args:
            conversations: N conversations before the completion, each a list of
                `{"role", "content"}` messages.
            completions: N completions, each a string or a list of assistant messages.
            categories: N request categories (or one for all), routed by the policy.
            response_types: N response types (or one for all); where given (not
                None) it wins over the category. An item with neither has no route.
            rm_scores: N reward model scores; used instead of calling `rm`.
            p_yes: `[N, P]` precomputed P(yes) (policy proposition order); the
                grader is not called. Rows of unrouted items are ignored.

        Returns:
            A `RewardBatch`.

        Raises:
            PolicyError: lengths differ, an unknown response type, a non-finite
                RM score, or no grader; ConversationError: a malformed
                conversation or completion (naming the item).
        """
        conversations = self._conversations(conversations)
        n = len(conversations)
        texts = self._completions(completions, n)
        routed = self.route(n, categories, response_types)
        rm = self._rm_scores(conversations, texts, rm_scores, n)

        rbr: list[Optional[float]] = [None] * n
        class_probs: list[Optional[dict]] = [None] * n
        items = [i for i in range(n) if routed[i] is not None]
        if items:
            probs = self._probabilities(conversations, texts, items, p_yes, n)
            by_type: dict[str, list[int]] = {}
            for k, i in enumerate(items):
                by_type.setdefault(routed[i], []).append(k)
            for name, rows in by_type.items():
                rt = self.policy.response_type(name)
                feats = self.policy.features(name, probs[rows])
                values = self.policy.reward(name, feats).tolist()
                classes = feats[:, -len(rt.classes):].tolist()
                for k, value, cp in zip(rows, values, classes):
                    rbr[items[k]] = value
                    class_probs[items[k]] = dict(zip(rt.classes, cp))

        # Routed: RBR (+ RM). Unrouted: the RM alone, or None for other reward functions to decide.
        rewards = [unrouted_reward(r, m) for r, m in zip(rbr, rm)]
        return RewardBatch(rewards=rewards, response_types=routed, class_probabilities=class_probs,
                           rbr=rbr, rm=rm)

    # --- the steps ---------------------------------------------------------------
    def route(self, n: int, categories=None, response_types=None) -> list[Optional[str]]:
        """Each item's response type (canonical name) or None (no route)."""
        if categories is None and response_types is None:
            raise PolicyError("give each item's `categories` or `response_types` (one per item, or one for all): "
                              "they choose the response type a completion is judged under")
        cats = per_item(categories, n, "categories")
        types = per_item(response_types, n, "response_types")
        out: list[Optional[str]] = []
        for i in range(n):
            # Trainer columns may hold non-strings (numpy strings, numbers): routed as their text.
            rt, cat = types[i], cats[i]
            try:
                out.append(self.policy.route_item(response_type=None if rt is None else str(rt),
                                                  category=None if cat is None else str(cat)))
            except PolicyError as exc:
                raise PolicyError(f"item {i}: {exc}") from None
        return out

    def _completions(self, completions, n: int) -> list[str]:
        from ..data.records import completion_text

        if isinstance(completions, (str, bytes)) or not hasattr(completions, "__len__"):
            raise PolicyError("completions must be a list with one completion per conversation")
        if len(completions) != n:
            raise PolicyError(f"{n} conversations but {len(completions)} completions; give one completion each")
        return _each(completions, completion_text, "completion")

    @staticmethod
    def _conversations(conversations) -> list[list[dict]]:
        from ..data.records import checked_conversation

        if isinstance(conversations, (str, bytes, Mapping)) or not hasattr(conversations, "__len__"):
            raise ConversationError("conversations must be a list of conversations, each a list of messages")
        return _each(conversations, checked_conversation, "conversation")

    def _rm_scores(self, conversations, texts, given, n: int) -> list[Optional[float]]:
        if given is None and self.rm is None:
            return [None] * n
        source = "rm_scores" if given is not None else "the reward model"
        scores = given if given is not None else self.rm(list(conversations), list(texts))
        try:
            import torch

            values = torch.as_tensor(scores, dtype=torch.float64).flatten().tolist() \
                if not isinstance(scores, (list, tuple)) else [float(s) for s in scores]
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PolicyError(f"{source} must give {n} numbers ({exc})") from None
        if len(values) != n:
            raise PolicyError(f"{source} gave {len(values)} scores for {n} items")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise PolicyError(f"{source}: score not finite at item{'s' * (len(bad) > 1)} "
                              f"{', '.join(map(str, bad[:5]))}")
        return values

    def _probabilities(self, conversations, texts, items: list[int], p_yes, n: int):
        """`[len(items), P]` float64 P(yes) of the routed items (`rbrlang.data.probabilities`:
        checked, calibrated when the policy has a calibration), in one grader call."""
        import numpy as np
        import torch

        from ..data.probabilities import Given, probabilities

        width = len(self.policy.propositions)
        given = None
        if p_yes is not None:
            values = torch.as_tensor(p_yes, dtype=torch.float64)
            if values.dim() != 2 or tuple(values.shape) != (n, width):
                raise PolicyError(f"p_yes must have shape [{n}, {width}] (items × the policy's propositions), "
                                  f"got {list(values.shape)}")
            values = values[items].cpu().numpy()
            if not np.isfinite(values).all():
                raise PolicyError("p_yes must be finite probabilities in [0, 1]")
            # Given P(yes) stand for the grader's: calibrated like them.
            given = Given(values, np.ones(values.shape, dtype=bool), np.zeros(len(items), dtype=bool))
        elif self.grader is None:
            raise PolicyError("this RBRReward has no grader: give one (RBRReward(policy, grader)) or pass p_yes")
        result = probabilities(self.policy, self.grader, [conversations[i] for i in items],
                               [texts[i] for i in items], given=given, chunk=None)
        return torch.from_numpy(result.p_yes)


def _each(values, check, what: str) -> list:
    """`check` applied to every item, a ConversationError naming the item (`what i: …`)."""
    out = []
    for i, value in enumerate(values):
        try:
            out.append(check(value))
        except ConversationError as exc:
            raise ConversationError(f"{what} {i}: {exc}") from None
    return out


def per_item(values, n: int, what: str) -> list:
    """A per-item column: None (nothing given), one string for all items, or one value per item."""
    if values is None:
        return [None] * n
    if isinstance(values, str):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise PolicyError(f"{what} has {len(values)} entries for {n} items; give one per item (or one string for all)")
    return values
