"""OpenRLHF: its two ways to a custom reward, spoken by a compiled policy.

Read from OpenRLHF's code (v0.11.0, github OpenRLHF/OpenRLHF):

- `openrlhf/utils/agent.py` `SingleTurnAgentExecutor`: after each generation it
  builds `query = tokenizer.decode(prompt_ids + response_ids,
  skip_special_tokens=False)` and asks for the reward of ONE sample, either
  - over HTTP (`_fetch_rewards_via_http`): `POST <url>` with JSON
    `{"query": [query], "prompts": [prompt], "labels": [label]}`, retried 5
    times on errors; or
  - through a Python file (`--reward.remote_url path/to/file.py`, before 0.10.2
    `--remote_rm_url`): the file is executed with `importlib` and its
    `reward_func(queries, prompts, labels)` is called through
    `asyncio.to_thread`, one sample per call, many calls at once.
  Both answer a dict: `rewards` (used for advantages), `scores` (dynamic
  filtering; `rewards` when absent) and `extra_logs` (numbers, logged).
- `openrlhf/datasets/prompts_dataset.py` `preprocess_data`: `prompt` is the
  dataset's `--data.input_key` column, passed through the policy model's chat
  template when `--data.apply_chat_template` is on (so it is template markup);
  `label` is the `--data.label_key` column as it is (a string, or any JSON value).
- `openrlhf/trainer/ppo_utils/samples_generator.py`: the answer's `rewards`,
  `scores` and each `extra_logs` value become `torch.tensor([value])`, one per
  sample; every sample must log the same `extra_logs` keys.
- `openrlhf/cli/serve_rm.py`: OpenRLHF's own reward server answers lists:
  `{"rewards": [...], "scores": [...], "extra_logs": {...}}`.

How the grader gets the conversation as messages, not as the policy model's
template markup:

1. the label is a JSON object (a dict column, or its JSON text) with
   `"messages"`: the conversation before the response, as `{"role",
   "content"}` messages, plus `"category"` (or `"response_type"`);
2. else the label is the category itself, and the conversation is the prompt
   text as ONE user message. Limits of this fallback: the grader then reads the
   policy model's chat-template markup (`<|im_start|>user ...`) as if the user
   had typed it, a multi-turn prompt collapses into one turn, and a system
   prompt becomes part of the user's text. Graders judge the final response
   either way, but put the messages in the label for faithful grading.

The response is `query` with the prompt cut off the front: exactly where the
query starts with the prompt, else by aligning the two while skipping
whitespace the tokenizer round trip changed (a query that does not contain the
prompt, e.g. a left-truncated prompt, is an error naming the sample).
`decode(..., skip_special_tokens=False)` leaves the end-of-turn token's text
(`<|im_end|>`, `<|eot_id|>`, `</s>`) at the end of the response: name it in
`strip_suffixes` (`rbrc serve --strip-suffix`, `RBR_STRIP_SUFFIX`) so the
grader does not see it.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Sequence

from ..data.jsonl import JSONTextError, parse_json
from ..diagnostics import json_type
from ..errors import RbrError
from ..rewards.reward import UNROUTED_REWARD
from .samples import SCORES, ItemReward, Sample, SampleError, check_route, conversation_from, extra_logs

log = logging.getLogger("rbrlang.integrations.openrlhf")


def parse_label(label: Any, index: int) -> tuple[Optional[str], Optional[str], Optional[tuple]]:
    """`(category, response_type, messages or None)` from one OpenRLHF label."""
    if isinstance(label, str):
        text = label.strip()
        if not text:
            raise SampleError(index, "the label is empty: pass the request category (or a JSON object with "
                                     "`category` and `messages`) with OpenRLHF's --data.label_key")
        if not text.startswith("{"):
            return text, None, None
        try:
            label = parse_json(text)
        except JSONTextError as exc:
            raise SampleError(index, f"the label looks like a JSON object but cannot be read: {exc.message} (at "
                                     f"character {exc.position})") from None
    if not isinstance(label, Mapping):
        raise SampleError(index, f"the label is a category string or a JSON object, not {json_type(label)}")
    unknown = sorted(set(label) - {"category", "response_type", "messages"})
    if unknown:
        raise SampleError(index, f"the label has unknown key(s) {', '.join(map(repr, unknown))}; "
                                 "it takes `category` or `response_type`, and `messages`")
    category, response_type = label.get("category"), label.get("response_type")
    for key, value in (("category", category), ("response_type", response_type)):
        if value is not None and not isinstance(value, str):
            raise SampleError(index, f"the label's `{key}` must be a string, not {json_type(value)}")
    if category is None and response_type is None:
        raise SampleError(index, "the label has neither `category` nor `response_type`")
    messages = label.get("messages")
    return category, response_type, None if messages is None else conversation_from(messages, index)


def split_query(query: str, prompt: str, index: int) -> str:
    """The response: `query` after `prompt` (exact prefix, else whitespace-tolerant alignment)."""
    if query.startswith(prompt):
        return query[len(prompt):]
    # Tokenizers may change whitespace on the decode(encode(prompt)) round trip; walk both, skipping it.
    i = j = 0
    while j < len(prompt):
        if i < len(query) and query[i] == prompt[j]:
            i, j = i + 1, j + 1
        elif prompt[j].isspace():
            j += 1
        elif i < len(query) and query[i].isspace():
            i += 1
        else:
            raise SampleError(index, "the query does not start with its prompt, so the response cannot be cut "
                                     "out (was the prompt truncated? OpenRLHF keeps the last tokens of a long "
                                     "prompt; raise --data.max_len or shorten the prompt)")
    return query[i:]


def strip_end(text: str, suffixes: Sequence[str]) -> str:
    """`text` without any of `suffixes` at its end (repeatedly: `</s>` after `<|im_end|>`)."""
    changed = True
    while changed and suffixes:
        changed = False
        for s in suffixes:
            if s and text.endswith(s):
                text, changed = text[:-len(s)], True
    return text


def samples_from_request(queries: Any, prompts: Any, labels: Any, policy=None,
                         strip_suffixes: Sequence[str] = ()) -> list[Sample]:
    """OpenRLHF's `query`/`prompts`/`labels` lists as `Sample`s; `SampleError` names a bad one.

    With `policy`, each sample's route is checked now (an unknown response type
    fails here, before any grading)."""
    for name, value in (("query", queries), ("prompts", prompts), ("labels", labels)):
        if not isinstance(value, (list, tuple)):
            raise SampleError(None, f"`{name}` must be a list (one entry per sample), not {json_type(value)}")
    if not len(queries) == len(prompts) == len(labels):
        raise SampleError(None, f"`query`, `prompts` and `labels` must have one entry per sample; got "
                             f"{len(queries)}, {len(prompts)} and {len(labels)}")
    out = []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
        if not isinstance(query, str) or not isinstance(prompt, str):
            raise SampleError(i, "each query and prompt must be a string")
        category, response_type, messages = parse_label(label, i)
        completion = strip_end(split_query(query, prompt, i), strip_suffixes)
        if messages is None:
            sample = Sample(({"role": "user", "content": prompt},), completion, category, response_type, "prompt")
        else:
            sample = Sample(messages, completion, category, response_type, "messages")
        if policy is not None:
            check_route(policy, sample, i)
        out.append(sample)
    return out


def answer(items: Sequence[ItemReward], has_rm: bool, unrouted: float = UNROUTED_REWARD,
           scores: str = "reward") -> dict:
    """OpenRLHF's answer for scored samples, as lists (what its `serve_rm` sends):
    `rewards` (`unrouted` where a sample has no route and there is no RM),
    `scores` and `extra_logs` (see `samples.extra_logs`).

    `scores` feed OpenRLHF's dynamic filtering (`--algo.dynamic_filtering_enable`:
    a prompt is kept when its samples' mean score lies strictly inside
    `--algo.dynamic_filtering_range`, default (0, 1)): `scores="reward"` sends
    the rewards again; `"class_score"` the expected class score
    (`ItemReward.class_score`, in [0, 1] with the default class scores), the
    reward where a sample has no route."""
    rewards = [i.number(unrouted) for i in items]
    if scores == "class_score":
        values = [r if i.class_score is None else i.class_score for i, r in zip(items, rewards)]
    elif scores == "reward":
        values = list(rewards)
    else:
        raise ValueError(f"scores must be one of {', '.join(SCORES)}, not {scores!r}")
    return {"rewards": rewards, "scores": values, "extra_logs": extra_logs(items, has_rm)}


class RewardFunc:
    """OpenRLHF's `reward_func(queries, prompts, labels, **kwargs)` over an `RBRReward`.

    OpenRLHF calls it from many threads at once, one sample each
    (`asyncio.to_thread` in `_fetch_rewards_via_func`): the calls share grader
    batches through one `ThreadBatcher`, which runs the grader on one thread.
    It answers float tensors, as OpenRLHF's example reward functions do; a
    sample without a route and without an RM scores `unrouted_reward`;
    `scores` says what the answer's `scores` are (`answer`).

    A sample that cannot be scored raises, naming it, and the reason is logged
    at WARNING first (logger `rbrlang.integrations.openrlhf`): OpenRLHF catches
    the exception and logs it at INFO only, and the sample gets no reward.
    """

    def __init__(self, reward, strip_suffixes: Sequence[str] = (), unrouted_reward: float = UNROUTED_REWARD,
                 scores: str = "reward"):
        from .loading import batcher_for

        if scores not in SCORES:
            raise ValueError(f"scores must be one of {', '.join(SCORES)}, not {scores!r}")
        self.reward = reward
        self.strip_suffixes = tuple(strip_suffixes)
        self.unrouted_reward = float(unrouted_reward)
        self.scores = scores
        self.batcher = batcher_for(reward)

    def __call__(self, queries, prompts, labels, **kwargs) -> dict:
        import torch

        try:
            samples = samples_from_request(list(queries), list(prompts), list(labels), self.reward.policy,
                                           self.strip_suffixes)
            items = self.batcher.submit(samples)
        except RbrError as exc:
            log.warning("rbrlang reward_func: a request was not scored: %s", exc)
            raise
        body = answer(items, self.reward.rm is not None, self.unrouted_reward, self.scores)
        return {"rewards": torch.tensor(body["rewards"], dtype=torch.float32),
                "scores": torch.tensor(body["scores"], dtype=torch.float32),
                "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in body["extra_logs"].items()}}
