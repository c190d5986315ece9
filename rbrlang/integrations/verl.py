"""veRL: a compiled policy as veRL's custom reward function.

Read from the released veRL 0.9.1 (and 0.6.1, 0.7.1, 0.8.0 for the history):

- `verl/trainer/config/reward/reward.yaml`: the keys are under `reward.`:
  `reward.custom_reward_function.{path,name,reward_kwargs}`,
  `reward.reward_manager.name` (default `naive`), `reward.num_workers` (8),
  `reward.reward_model.{enable,model_path,rollout.*}`. The top-level
  `custom_reward_function.*` and `reward_model.*` keys of older releases are
  still accepted by Hydra, but 0.9.1's `main_ppo` no longer calls
  `migrate_legacy_reward_impl` (0.7 and 0.8 did): set there, they are ignored.
- `verl/trainer/ppo/reward.py` `get_custom_reward_fn`: `load_extern_object`
  loads `path` (a file or `pkg://package.module`) and `name`; `reward_kwargs`
  are merged into every call (`functools.partial`); an `async def` function
  stays async.
- `verl/experimental/reward_loop/reward_manager/naive.py`
  `NaiveRewardManager.run_single`: one call per sample, from `reward.num_workers`
  Ray actors (separate processes) on their event loops:
  `compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`,
  awaited when it is a coroutine function, else run in the loop's thread pool;
  plus `reward_router_address=` and `reward_model_tokenizer=` when the reward
  loop serves a judge (`reward.reward_model.enable=True`: vLLM or SGLang
  replicas behind a router, an OpenAI-compatible server at
  `http://<address>`). `solution_str` is the response decoded with
  `skip_special_tokens=True`; `extra_info` is the dataset's column plus the
  agent loop's fields (`raw_prompt`: the prompt's messages), `num_turns`,
  `rollout_reward_scores`. It takes a float, or a dict whose "score" is the
  reward and whose other keys are logged (every sample the same keys).
- The reward loop's registry holds naive, dapo, gdpo, rate_limited and
  remote: no `batch` manager since 0.7. `compute_score_batch` is for veRL up to
  0.6 (checked: 0.6.1, `verl/workers/reward_manager/batch.py`,
  `reward_model.reward_manager=batch`): legacy.

The dataset (parquet, as veRL's `examples/data_preprocess/*.py` write it):

    data_source   any name (not used here)
    prompt        the messages the policy model is prompted with
    reward_model  {"style": "rule", "ground_truth": <the category, or "">}
    extra_info    {"category": "C-R"}   (or "response_type": "hard_refuse"),
                  optionally "messages": the conversation the grader reads

The conversation the grader reads is `extra_info["messages"]` when given, else
`extra_info["raw_prompt"]` (veRL 0.9 adds the prompt's messages there), else
`extra_info["prompt"]`; the category is `extra_info["category"]`, else
`extra_info["response_type"]`, else a non-empty string `ground_truth`.

Config (Hydra overrides of `python -m verl.trainer.main_ppo`, veRL 0.9)::

    reward.custom_reward_function.path=pkg://rbrlang.integrations.verl
    reward.custom_reward_function.name=compute_score_async
    +reward.custom_reward_function.reward_kwargs.policy=compiled/safety   # or RBR_POLICY
    +reward.custom_reward_function.reward_kwargs.grader=MODEL             # or RBR_GRADER

The grader loads once per process, from the arguments or the `RBR_*`
environment variables (`rbrlang.integrations.loading`); concurrent calls in a
process share grader batches. Each of the `reward.num_workers` reward workers
is a process: in process each loads its own grader; with the judge served by
the reward loop (`reward_router_address` given) or by any server
(`RBR_BACKEND=openai`, `RBR_BASE_URL`), each only talks to it. A sample with
no route scores its RM score, or without an RM `unrouted_reward` (veRL needs a
number: `reward_kwargs.unrouted_reward`, else `RBR_UNROUTED_REWARD`, else 0.0;
the rule is `rbrlang.rewards.unrouted_reward`).
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping, Optional, Sequence

from rbrlang.diagnostics import json_type
from rbrlang.errors import UsageError
from rbrlang.integrations.loading import batcher_for, shared_reward, unrouted_reward_setting
from rbrlang.integrations.samples import Sample, SampleError, check_route, conversation_from


def sample_from(solution_str: str, ground_truth: Any, extra_info: Optional[Mapping], index: int = 0) -> Sample:
    """One veRL sample as a `Sample` (the columns: module docstring)."""
    if not isinstance(solution_str, str):
        raise SampleError(index, f"solution_str must be a string, not {json_type(solution_str)}")
    info = extra_info if isinstance(extra_info, Mapping) else {}
    key = next((k for k in ("messages", "raw_prompt", "prompt") if info.get(k) is not None), None)
    if key is None:
        raise SampleError(index, "extra_info has no `messages` (nor veRL's `raw_prompt`): put the prompt's "
                                 "messages there (veRL before 0.9 passes extra_info, not the prompt column, to "
                                 "reward functions)")
    category, response_type = info.get("category"), info.get("response_type")
    if category is None and response_type is None and isinstance(ground_truth, str) and ground_truth:
        category = ground_truth
    return Sample(conversation_from(info[key], index, f"extra_info.{key}"), solution_str,
                  None if category is None else str(category),
                  None if response_type is None else str(response_type))


def compute_score_batch(data_sources: Sequence, solution_strs: Sequence[str], ground_truths: Sequence,
                        extra_infos: Sequence, *, policy: Optional[str] = None, grader: Optional[str] = None,
                        rm: Optional[str] = None, return_dict: bool = False, reward=None,
                        unrouted_reward: Optional[float] = None, reward_router_address: Optional[str] = None,
                        reward_model_tokenizer=None, **_kwargs: Any) -> list:
    """Legacy: veRL up to 0.6's batched form (`reward_model.reward_manager=batch`;
    veRL 0.7 and later have no batch manager: use `compute_score_async`). One
    score per sample.

    `policy`/`grader`/`rm` (or `RBR_POLICY`/`RBR_GRADER`/`RBR_RM`) say what to
    load; `reward` passes an `RBRReward` directly. `return_dict=True` gives
    `{"score", "rbr", "rbr_routed"(, "rm")}` per sample (veRL logs the extra keys).
    `unrouted_reward`: the score of a sample without a route when there is no RM.
    `reward_router_address` (veRL's judge mode): grade through that server
    (`judge_reward`).
    """
    unrouted = unrouted_reward_setting(unrouted_reward)
    if reward is None:
        reward = (judge_reward(reward_router_address, policy, grader, rm, reward_model_tokenizer)
                  if reward_router_address else shared_reward(policy, grader, rm))
    samples = _samples(reward, solution_strs, ground_truths, extra_infos)
    # One grader thread per reward; calls from veRL's reward-loop threads share its batches.
    return _results(reward, batcher_for(reward).submit(samples), unrouted, return_dict)


def _samples(reward, solution_strs, ground_truths, extra_infos) -> list[Sample]:
    n = len(solution_strs)
    if not len(ground_truths) == len(extra_infos) == n:
        raise SampleError(None, f"{n} solutions but {len(ground_truths)} ground truths and "
                                f"{len(extra_infos)} extra_infos")
    samples = [sample_from(s, g, e, i) for i, (s, g, e) in enumerate(zip(solution_strs, ground_truths, extra_infos))]
    for i, s in enumerate(samples):
        check_route(reward.policy, s, i)
    return samples


def _results(reward, items, unrouted: float, return_dict: bool) -> list:
    if not return_dict:
        return [i.number(unrouted) for i in items]
    has_rm = reward.rm is not None
    return [{"score": i.number(unrouted), "rbr": i.rbr, "rbr_routed": float(i.routed),
             **({"rm": i.rm} if has_rm else {})} for i in items]


def judge_reward(address: str, policy: Optional[str] = None, grader: Optional[str] = None, rm: Optional[str] = None,
                 tokenizer=None):
    """The process's `RBRReward` grading through veRL's reward router at `address`
    ("host:port", an OpenAI-compatible server: `OpenAIGrader`).

    The served model is `grader` (or `RBR_GRADER`) when the server serves it
    under that name, else the one model it serves (veRL's replicas serve
    `reward.reward_model.model_path`, often as a local copy's path); the prompt
    ids are made with veRL's `reward_model_tokenizer` (its path) or that model's."""
    import os

    from rbrlang.runtime.openai import _http

    base_url = address if "://" in address else f"http://{address}"
    base_url = base_url.rstrip("/") + "/v1"
    wanted = grader or os.environ.get("RBR_GRADER")
    try:
        listing = _http().get(base_url + "/models", timeout=30).json()
        served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
    except Exception as exc:  # the router not up, not JSON: say which address
        raise UsageError(f"veRL's reward router at {address} did not list its models ({type(exc).__name__}: "
                         f"{exc})") from None
    if wanted in served:
        model = wanted
    elif len(served) == 1:
        model = served[0]
    else:
        raise UsageError(f"veRL's reward router at {address} serves {', '.join(map(str, served)) or 'no model'}; "
                         "name the judge with reward_kwargs.grader (or RBR_GRADER)")
    path = getattr(tokenizer, "name_or_path", None) or wanted or model
    return shared_reward(policy, str(model), rm, backend="openai", base_url=base_url, tokenizer=str(path))


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Optional[Mapping] = None,
                  *, policy: Optional[str] = None, grader: Optional[str] = None, rm: Optional[str] = None,
                  return_dict: bool = False, reward=None, unrouted_reward: Optional[float] = None, **kwargs: Any):
    """veRL's per-sample form, called synchronously (veRL runs it in a thread
    pool): one float (or dict). `compute_score_async` is the same, awaited."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], policy=policy,
                               grader=grader, rm=rm, return_dict=return_dict, reward=reward,
                               unrouted_reward=unrouted_reward, **kwargs)[0]


async def compute_score_async(data_source: Any, solution_str: str, ground_truth: Any,
                              extra_info: Optional[Mapping] = None, *, policy: Optional[str] = None,
                              grader: Optional[str] = None, rm: Optional[str] = None, return_dict: bool = False,
                              reward=None, unrouted_reward: Optional[float] = None,
                              reward_router_address: Optional[str] = None, reward_model_tokenizer=None,
                              **_kwargs: Any):
    """veRL 0.9's reward loop awaits this on its event loop (`NaiveRewardManager`):
    concurrent samples wait for one shared grader batch without a thread each.
    Arguments as `compute_score_batch`; loading the grader (once per process)
    runs off the event loop."""
    unrouted = unrouted_reward_setting(unrouted_reward)
    if reward is None:
        reward = await asyncio.to_thread(
            lambda: judge_reward(reward_router_address, policy, grader, rm, reward_model_tokenizer)
            if reward_router_address else shared_reward(policy, grader, rm))
    samples = _samples(reward, [solution_str], [ground_truth], [extra_info])
    items = await asyncio.wrap_future(batcher_for(reward).submit_future(samples))
    return _results(reward, items, unrouted, return_dict)[0]
