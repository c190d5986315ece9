"""Rewards recomputed the long way, for tests that check what a trainer or a
server computed: `grader.grade`, calibration, `policy.features`, `policy.reward`."""
from __future__ import annotations


def expected_rewards(policy, grader, conversations, texts, categories) -> list[float]:
    """The reward of each (conversation, text) under its category's response type."""
    probs = grader.grade(policy, conversations, texts).double()
    if policy.calibration is not None:
        probs = policy.calibrate(probs)
    out = []
    for i, cat in enumerate(categories):
        rt = policy.route(cat)
        out.append(float(policy.reward(rt, policy.features(rt, probs[i:i + 1]))[0]))
    return out
