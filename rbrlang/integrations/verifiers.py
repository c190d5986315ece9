"""verifiers (what prime-rl trains with): a compiled policy as a judge plugin.

Read from the released verifiers 0.4.0 (`verifiers/v1`):

- `judge.py`: a judge is a `vf.Judge` subclass; one with an `id` and an
  `async score(task, trace)` is a *plugin*, configured on
  `TaskConfig.judges` (`--env.taskset.task.judges`, or a taskset's defaults)
  and run by `Task.score` after the task's own rewards. `score` gives a float
  (recorded as the reward `reward_name`, weighted by `config.weight`) or a
  mapping of rewards.
- `utils/loaders.py` `_import_plugin`: a judge id `a-b` (hub ids
  `owner/a-b@version` too) is imported as the module `verifiers.v1.judges.a_b`,
  else the top-level module `a_b`, which must export exactly one `Judge`
  subclass in `__all__`; `configs/judge.py` `resolve_judges` validates the
  entry with that class's config type. Dotted module paths are not ids, so
  the plugin is the top-level package `rbrlang_judge` (id `rbrlang-judge`),
  which re-exports `RBRJudge`.
- `task.py` `Task.score`: `plugged_judges()` builds a new judge object for
  every rollout it scores, and rollouts are scored concurrently: so the
  grader and its batching live per process (`loading.shared_reward`,
  `batcher_for`), and concurrent rollouts' samples go to the grader in one
  batch.
- `trace.py`: `trace.last_reply` (the root agent's final reply, else the last
  sampled assistant message), `trace.transcript`, `trace.record_metrics`.

What is graded: the task's prompt (`TaskData.prompt`, with its
`system_prompt`) as the conversation, and the rollout's final reply
(`view="last_reply"`, as the built-in judges default to) or its text
transcript (`"full_trace"`). The route is the task's `category` field (or
`response_type`; both names configurable), extra fields of the task's data.

A config entry (TOML):

    [[env.taskset.task.judges]]
    id = "rbrlang-judge"
    policy = "compiled/safety"
    model = "Qwen/Qwen2.5-7B-Instruct"      # in process (backend "hf" or "vllm"),
    # backend = "openai"                    # or a served judge: vLLM's /v1/completions
    # base_url = "http://judge:8000/v1"     # with token-id prompts (`OpenAIGrader`)
"""
from __future__ import annotations

import asyncio
from typing import Literal, Optional

import verifiers.v1 as vf
from pydantic import model_validator

from .loading import batcher_for, shared_reward
from .samples import Sample, check_route

class RBRJudgeConfig(vf.JudgeConfig):
    """`RBRJudge`'s settings (beside `JudgeConfig`'s `name`, `weight`, `model`, `base_url`)."""

    id: str = "rbrlang-judge"
    policy: str = ""
    """The compiled policy folder (`rbrc compile` output)."""
    backend: Literal["hf", "vllm", "openai"] = "hf"
    """Where `model` runs: here ("hf": transformers, "vllm": vLLM's engine) or served
    ("openai": an OpenAI-compatible completions server at `base_url`, e.g. vLLM)."""
    tokenizer: Optional[str] = None
    """The served model's tokenizer (backend "openai"), when `model` does not name it."""
    device: str = "auto"
    dtype: str = "auto"
    category_field: str = "category"
    response_type_field: str = "response_type"
    view: vf.JudgeView = "last_reply"
    unrouted_reward: float = 0.0
    """The reward of a task whose category has no route (verifiers needs a number)."""

    @model_validator(mode="after")
    def check_rbr(self) -> "RBRJudgeConfig":
        if not self.policy:
            raise ValueError("the rbrlang judge needs `policy`: the compiled policy folder (`rbrc compile` output)")
        if "model" not in self.model_fields_set:
            raise ValueError("the rbrlang judge needs `model`: the grader model (a folder or hub id; with "
                             "backend \"openai\", the served model's name)")
        return self


class RBRJudge(vf.Judge[float, RBRJudgeConfig]):
    """The policy's reward for a rollout, from its class probabilities.

    Records on the trace, as metrics: `<name>/routed` (1 or 0) and
    `<name>/<response type>/<class>` (the probability of each class), beside
    the reward `<name>` (`reward_name`: the config's `name`, else its id)."""

    async def score(self, task: vf.TaskData, trace: vf.Trace) -> float:
        config = self.config
        reward = await asyncio.to_thread(  # loads the grader once per process, off the event loop
            shared_reward, config.policy, config.model, None, config.device, config.dtype, config.backend,
            config.base_url if config.backend == "openai" else None, config.tokenizer)
        sample = sample_of(task, trace, config)
        check_route(reward.policy, sample, 0)
        item, = await asyncio.wrap_future(batcher_for(reward).submit_future([sample]))
        name = self.reward_name
        metrics = {f"{name}/routed": float(item.routed)}
        for cls, p in (item.class_probabilities or {}).items():
            metrics[f"{name}/{item.response_type}/{cls}"] = float(p)
        trace.record_metrics(metrics)
        return item.number(config.unrouted_reward)


def sample_of(task: vf.TaskData, trace: vf.Trace, config: RBRJudgeConfig) -> Sample:
    """The rollout as a `Sample`: the task's prompt messages, the reply, the route."""
    from verifiers.v1.judge import judge_response

    conversation = []
    if task.system_prompt:
        conversation.append({"role": "system", "content": task.system_prompt})
    if isinstance(task.prompt, str):
        conversation.append({"role": "user", "content": task.prompt})
    else:
        for message in task.prompt or []:
            conversation.append({"role": message.role, "content": _text(message.content)})
    category = getattr(task, config.category_field, None)
    response_type = getattr(task, config.response_type_field, None)
    return Sample(tuple(conversation), judge_response(trace, config.view),
                  None if category is None else str(category),
                  None if response_type is None else str(response_type))


def _text(content) -> str:
    """A message's text: a string, or its text parts joined (images have none)."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(getattr(part, "text", "") or "" for part in content)


__all__ = ["RBRJudge", "RBRJudgeConfig"]
