"""veRL: a compiled policy as veRL's custom reward function.

Read from veRL's code (github volcengine/verl, main of 2026-01):

- `verl/trainer/ppo/reward.py` `get_custom_reward_fn`: the config's
  `custom_reward_function.path` and `.name` name the function, loaded by
  `verl/utils/import_utils.py` `load_extern_object` from a file path or a
  `pkg://package.module` path; `custom_reward_function.reward_kwargs` are
  added to every call.
- `verl/workers/reward_manager/naive.py` (`reward_model.reward_manager=naive`,
  the default): one call per sample, by keyword:
  `compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`;
  `solution_str` is the response decoded with `skip_special_tokens=True`,
  `ground_truth` is the dataset's `reward_model.ground_truth`, `extra_info` its
  `extra_info` column (plus veRL's `num_turns`, `rollout_reward_scores`). It
  takes a float, or a dict whose "score" is the reward and whose other keys
  are logged (every sample must give the same keys).
- `verl/workers/reward_manager/batch.py` (`reward_model.reward_manager=batch`):
  one call per batch: `compute_score(data_sources=, solution_strs=,
  ground_truths=, extra_infos=)` returning one score (or dict) per sample.
- `verl/experimental/reward_loop/reward_manager/naive.py`: per sample from a
  thread pool, possibly with `reward_router_address=`/`reward_model_tokenizer=`.
- `verl/workers/reward_manager/prime.py`: per sample, positionally, in 64
  worker processes (each would load the grader): use `batch` instead.
- `verl/utils/reward_score/__init__.py` `default_compute_score`: the signature
  this module keeps.

The dataset (parquet, as veRL's `examples/data_preprocess/*.py` write it):

    data_source   any name (not used here)
    prompt        the messages the policy model is prompted with
    reward_model  {"style": "rule", "ground_truth": <the category, or "">}
    extra_info    {"messages": <the prompt's messages, or their JSON text>,
                   "category": "C-R"}   (or "response_type": "hard_refuse")

veRL does not pass the `prompt` column to reward functions, so the conversation
the grader reads is `extra_info["messages"]` (or `extra_info["prompt"]`); the
category is `extra_info["category"]`, else `extra_info["response_type"]`, else
a non-empty string `ground_truth`.

Config (Hydra overrides of `python -m verl.trainer.main_ppo`)::

    custom_reward_function.path=pkg://rbrlang.integrations.verl
    custom_reward_function.name=compute_score_batch
    reward_model.reward_manager=batch
    +custom_reward_function.reward_kwargs.policy=compiled/safety   # or RBR_POLICY
    +custom_reward_function.reward_kwargs.grader=MODEL             # or RBR_GRADER

(`name=compute_score` with the default `naive` manager grades one sample per
call; the reward loop's concurrent per-sample calls share grader batches.) The grader loads once per process, from the arguments or the
`RBR_*` environment variables (`rbrlang.integrations.loading`). A sample with
no route scores its RM score, or without an RM `unrouted_reward` (veRL needs a
number: `reward_kwargs.unrouted_reward`, else `RBR_UNROUTED_REWARD`, else 0.0;
the rule is `rbrlang.rewards.unrouted_reward`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from rbrlang.integrations.loading import batcher_for, shared_reward, unrouted_reward_setting
from rbrlang.integrations.samples import Sample, SampleError, check_route, conversation_from


def sample_from(solution_str: str, ground_truth: Any, extra_info: Optional[Mapping], index: int = 0) -> Sample:
    """One veRL sample as a `Sample` (the columns: module docstring)."""
    if not isinstance(solution_str, str):
        raise SampleError(index, f"solution_str must be a string, not {type(solution_str).__name__}")
    info = extra_info if isinstance(extra_info, Mapping) else {}
    messages = info.get("messages", info.get("prompt"))
    if messages is None:
        raise SampleError(index, "extra_info has no `messages`: put the prompt's messages there (veRL passes "
                                 "extra_info, not the prompt column, to reward functions)")
    category, response_type = info.get("category"), info.get("response_type")
    if category is None and response_type is None and isinstance(ground_truth, str) and ground_truth:
        category = ground_truth
    return Sample(conversation_from(messages, index, "extra_info.messages"), solution_str,
                  None if category is None else str(category),
                  None if response_type is None else str(response_type))


def compute_score_batch(data_sources: Sequence, solution_strs: Sequence[str], ground_truths: Sequence,
                        extra_infos: Sequence, *, policy: Optional[str] = None, grader: Optional[str] = None,
                        rm: Optional[str] = None, return_dict: bool = False, reward=None,
                        unrouted_reward: Optional[float] = None, **_kwargs: Any) -> list:
    """veRL's batched form (`reward_model.reward_manager=batch`): one score per sample.

    `policy`/`grader`/`rm` (or `RBR_POLICY`/`RBR_GRADER`/`RBR_RM`) say what to
    load; `reward` passes an `RBRReward` directly. `return_dict=True` gives
    `{"score", "rbr", "rbr_routed"(, "rm")}` per sample (veRL logs the extra keys).
    `unrouted_reward`: the score of a sample without a route when there is no RM.
    """
    unrouted = unrouted_reward_setting(unrouted_reward)
    if reward is None:
        reward = shared_reward(policy, grader, rm)
    n = len(solution_strs)
    if not len(ground_truths) == len(extra_infos) == n:
        raise SampleError(None, f"{n} solutions but {len(ground_truths)} ground truths and "
                                f"{len(extra_infos)} extra_infos")
    samples = [sample_from(s, g, e, i) for i, (s, g, e) in enumerate(zip(solution_strs, ground_truths, extra_infos))]
    for i, s in enumerate(samples):
        check_route(reward.policy, s, i)
    # One grader thread per reward; calls from veRL's reward-loop threads share its batches.
    items = batcher_for(reward).submit(samples)
    if not return_dict:
        return [i.number(unrouted) for i in items]
    has_rm = reward.rm is not None
    return [{"score": i.number(unrouted), "rbr": i.rbr, "rbr_routed": float(i.routed),
             **({"rm": i.rm} if has_rm else {})} for i in items]


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Optional[Mapping] = None,
                  *, policy: Optional[str] = None, grader: Optional[str] = None, rm: Optional[str] = None,
                  return_dict: bool = False, reward=None, unrouted_reward: Optional[float] = None, **kwargs: Any):
    """veRL's per-sample form (`naive` reward manager, the reward loop): one float (or dict)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], policy=policy,
                               grader=grader, rm=rm, return_dict=return_dict, reward=reward,
                               unrouted_reward=unrouted_reward, **kwargs)[0]
