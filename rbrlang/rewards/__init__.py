"""Rewards for trainers: `RBRReward` routes, grades and scores completions with a
compiled policy (`policy.reward` holds the math, in `rbrlang.policy.scoring`)."""
from .reward import RBRReward, RewardBatch

__all__ = ["RBRReward", "RewardBatch"]
