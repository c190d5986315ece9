"""Rewards for trainers: `RBRReward` routes, grades and scores completions with a
compiled policy (`policy.reward` holds the math, in `rbrlang.policy.scoring`);
`unrouted_reward` is the one rule for items without a route."""
from .reward import UNROUTED_REWARD, RBRReward, RewardBatch, unrouted_reward

__all__ = ["RBRReward", "RewardBatch", "UNROUTED_REWARD", "unrouted_reward"]
