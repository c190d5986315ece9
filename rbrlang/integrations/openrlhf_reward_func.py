"""OpenRLHF `reward_func` file: pass this file's path to OpenRLHF.

    export RBR_POLICY=compiled/safety RBR_GRADER=Qwen/Qwen2.5-7B-Instruct
    export RBR_STRIP_SUFFIX='<|im_end|>'           # the policy model's end-of-turn text
    python -m openrlhf.cli.train_ppo_ray ... \\
        --reward.remote_url "$(python -c 'import rbrlang.integrations.openrlhf_reward_func as m; print(m.__file__)')" \\
        --data.label_key label                     # the category, or {"category", "messages"} (see openrlhf.py)

(OpenRLHF before 0.10.2: `--remote_rm_url` and `--label_key`.) OpenRLHF executes
this file with `importlib.util.spec_from_file_location` (openrlhf/utils/agent.py,
`SingleTurnAgentExecutor`) in each rollout (vLLM engine) process, so each of
those processes loads the grader once, on its own device: set RBR_DEVICE, or
serve one grader for all of them with `rbrc serve` and pass its URL instead.
Other settings: `rbrlang.integrations.loading` (`RBR_SCORES=class_score` for
OpenRLHF's dynamic filtering). A sample that cannot be scored is logged at
WARNING (OpenRLHF itself logs the failure at INFO and leaves the reward empty):
look in the rollout workers' logs (Ray: `/tmp/ray/session_latest/logs/`).
Imports are absolute: the file is loaded outside its package.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_func = None


def reward_func(queries, prompts, labels, **kwargs):
    """`{"rewards", "scores", "extra_logs"}` for OpenRLHF (see `rbrlang.integrations.openrlhf`)."""
    global _func
    with _lock:  # OpenRLHF calls from many threads at once: load once
        if _func is None:
            from rbrlang.integrations.loading import (scores_setting, shared_reward, strip_suffixes,
                                                      unrouted_reward_setting)
            from rbrlang.integrations.openrlhf import RewardFunc

            _func = RewardFunc(shared_reward(), strip_suffixes(), unrouted_reward_setting(), scores_setting())
    return _func(queries, prompts, labels, **kwargs)
