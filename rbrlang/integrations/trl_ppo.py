"""TRL PPO: a compiled policy as `PPOTrainer`'s `reward_model`.

TRL's PPO trainer lives in `trl.experimental.ppo` up to trl 1.12 and is gone
from trl 1.13; importing this module checks for it (see `_require_trl_ppo`).

The contract, read from trl 1.12 (`trl.experimental.utils.get_reward`, called
by `PPOTrainer.train` and `generate_completions`)::

    attention_mask = query_responses != pad_token_id
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(input_ids=query_responses with pads set to 0, attention_mask=...,
                   position_ids=..., return_dict=True, output_hidden_states=True, use_cache=False)
    reward_logits = model.score(out.hidden_states[-1])          # [B, T, 1]
    score = reward_logits[b, last non-pad token of the response]

`query_responses` is the left-padded prompt (`context_length` columns, the
width of the batch's prompts) followed by the sampled response, cut after the
stop token and right-padded. The backbone is not told `context_length`: only
the token ids. So `RBRRewardModel` finds where each prompt ends itself:

1. a `PromptTable` (built from the same conversations the training dataset was
   tokenized from) maps each prompt's token ids to its conversation as messages
   and its request category; the longest known prompt a sequence starts with
   is its prompt. Every PPO prompt comes from the dataset, so with a table
   built from it every sequence is found, and the grader sees the real
   conversation, not the policy's chat markup.
2. The batch's prompts all end at the same column (the trainer pads them to one
   width), so a sequence not in the table is split at the column its batch
   mates' prompts end at. Where no sequence of the batch is known, the split is
   after the policy's generation prompt (the tokens `add_generation_prompt`
   appends, e.g. `<|im_start|>assistant\\n`): the last column right after those
   tokens in every sequence of the batch.
3. An unknown prompt is graded as one user message holding the decoded prompt
   text (special tokens dropped) under `default_category`.

The response is decoded with the policy tokenizer, special tokens dropped (so
the stop token does not reach the grader), graded by an `RBRReward`, and the
reward is written at every position of the `[B, T, 1]` output, so the last
token's value, which PPO reads, is the reward. Use a policy tokenizer whose pad
token differs from its EOS token (PPO drops every pad-valued token, and the
tokens of a chat template's turn ends would be lost), and `stop_token="eos"`.

Example::

    >>> from rbrlang.integrations.trl_ppo import PromptTable, RBRRewardModel  # doctest: +SKIP
    >>> table = PromptTable(tokenizer, conversations, categories=categories)  # doctest: +SKIP
    >>> train_dataset = datasets.Dataset.from_dict({"input_ids": table.input_ids})  # doctest: +SKIP
    >>> reward_model = RBRRewardModel(RBRReward(policy, grader), tokenizer, table)  # doctest: +SKIP
    >>> PPOTrainer(args=PPOConfig(stop_token="eos", ...), processing_class=tokenizer, model=policy_model,
    ...            ref_model=None, reward_model=reward_model, value_model=value_model,
    ...            train_dataset=train_dataset)  # doctest: +SKIP
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

SUPPORTED_TRL = "trl 1.12"
ALTERNATIVES = (
    "For TRL past 1.12, train with GRPO or RLOO instead (rbrlang.integrations.trl.reward_function, "
    "any recent trl); for PPO with another engine use OpenRLHF (`rbrc serve`, or the "
    "rbrlang.integrations.openrlhf reward_func file) or veRL (rbrlang.integrations.verl.compute_score).")


def trl_ppo_problem(version: Optional[str], has_ppo: bool) -> Optional[str]:
    """Why this module cannot be used with trl `version` (None: not installed), or None when it can."""
    if version is not None and has_ppo:
        return None
    have = "trl is not installed" if version is None else f"trl {version} is installed and has no trl.experimental.ppo"
    return (f"rbrlang.integrations.trl_ppo needs TRL's PPO trainer, which lives in trl.experimental.ppo up to "
            f"trl 1.12 and was removed in trl 1.13; {have}. Install {SUPPORTED_TRL} with "
            f"`pip install 'rbrlang[trl-ppo]'` (its own extra: the `trl` extra takes any trl). {ALTERNATIVES}")


def _require_trl_ppo() -> str:
    """The installed trl version, when it has `trl.experimental.ppo`; else an ImportError saying what to do."""
    try:
        version = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        version = None
    has_ppo = False
    if version is not None:
        try:
            has_ppo = importlib.util.find_spec("trl.experimental.ppo") is not None
        except (ImportError, ValueError):
            has_ppo = False
    problem = trl_ppo_problem(version, has_ppo)
    if problem:
        raise ImportError(problem)
    return version


TRL_VERSION = _require_trl_ppo()

import torch  # noqa: E402  (after the check: the message comes first)
from torch import nn  # noqa: E402

from ..errors import ConversationError, PolicyError  # noqa: E402
from ..data.records import checked_conversation  # noqa: E402
from ..rewards import RBRReward, RewardBatch  # noqa: E402
from ..rewards.reward import UNROUTED_REWARD, per_item  # noqa: E402

__all__ = ["PromptEntry", "PromptTable", "RBRRewardModel", "RBRScorer", "encode_prompt", "trl_ppo_problem"]


@dataclass(frozen=True)
class PromptEntry:
    """What the table knows about one prompt: the conversation and how to route it."""

    conversation: tuple
    category: Optional[str] = None
    response_type: Optional[str] = None


class PromptTable:
    """Prompt token ids -> the conversation (messages) and its category.

    Args:
        tokenizer: the policy tokenizer (the one PPOTrainer gets as `processing_class`).
        conversations: the prompts, each a list of `{"role", "content"}` messages.
        categories / response_types: one per conversation (or None); a response
            type, where given, wins over the category (rbrlang.data.records).
        input_ids: the prompts' token ids as the training dataset holds them;
            default: the chat template with the generation prompt, tokenized
            without adding special tokens again (the template writes them).
        chat_template_kwargs: extra arguments for `apply_chat_template`.

    `input_ids` (one list per conversation, in order) is what the PPO training
    dataset's `input_ids` column should hold. The same prompt ids with two
    different routes are an error: the reward could not tell them apart.
    """

    def __init__(self, tokenizer, conversations: Sequence, categories: Optional[Sequence] = None,
                 response_types: Optional[Sequence] = None, input_ids: Optional[Sequence] = None,
                 chat_template_kwargs: Optional[Mapping[str, Any]] = None):
        n = len(conversations)
        categories = [None if v is None else str(v) for v in per_item(categories, n, "categories")]
        response_types = [None if v is None else str(v) for v in per_item(response_types, n, "response_types")]
        if input_ids is not None and len(input_ids) != n:
            raise PolicyError(f"{n} conversations but {len(input_ids)} input_ids; give one per conversation")
        self.pad_token_id = tokenizer.pad_token_id
        self.input_ids: list[list[int]] = []
        self._entries: dict[tuple, tuple[int, PromptEntry]] = {}
        for i, conv in enumerate(conversations):
            try:
                messages = checked_conversation(conv)
            except ConversationError as exc:
                raise ConversationError(f"conversation {i}: {exc}") from None
            # The policy model's prompt is the conversation as given (a chat template may read more keys);
            # the grader reads the checked messages.
            ids = list(input_ids[i]) if input_ids is not None else encode_prompt(tokenizer, conv, chat_template_kwargs)
            self.input_ids.append(ids)
            entry = PromptEntry(tuple(_freeze(m) for m in messages), categories[i], response_types[i])
            key = self._key(ids)
            if key in self._entries and self._entries[key][1] != entry:
                j = self._entries[key][0]
                raise PolicyError(f"conversations {j} and {i} give the same prompt tokens but differ in "
                                  f"conversation or route; the reward model could not tell them apart")
            self._entries.setdefault(key, (i, entry))
        self._lengths = sorted({len(k) for k in self._entries}, reverse=True)

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, ids) -> tuple:
        # PPO masks every pad-valued token, so keys drop them the same way.
        return tuple(t for t in ids if t != self.pad_token_id)

    def get(self, prompt_ids: Sequence[int]) -> Optional[PromptEntry]:
        """The entry of exactly these prompt ids (pads ignored), or None."""
        hit = self._entries.get(self._key(prompt_ids))
        return None if hit is None else hit[1]

    def prefix_lengths(self, ids: Sequence[int]) -> list[int]:
        """Lengths L (longest first) such that `ids[:L]` is a known prompt; `ids` hold no pads."""
        ids = list(ids)
        return [n for n in self._lengths if n <= len(ids) and tuple(ids[:n]) in self._entries]


def encode_prompt(tokenizer, conversation, chat_template_kwargs=None) -> list[int]:
    """A conversation as the policy sees it: its chat template with the generation prompt."""
    text = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True,
                                         **dict(chat_template_kwargs or {}))
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class RBRScorer(nn.Module):
    """The backbone under `RBRRewardModel.base_model_prefix`: token ids in, the
    reward of each sequence out, as `hidden_states[-1]` of shape [B, T, 1]."""

    def __init__(self, reward: RBRReward, tokenizer, prompts: Optional[PromptTable] = None,
                 default_category: Optional[str] = None, unrouted_reward: float = UNROUTED_REWARD):
        super().__init__()
        if not isinstance(reward, RBRReward):
            raise PolicyError(f"reward must be an RBRReward, not {type(reward).__name__}")
        if tokenizer.pad_token_id is None:
            raise PolicyError("the policy tokenizer has no pad token; PPO needs one (and not the EOS token)")
        self.reward, self.tokenizer, self.prompts = reward, tokenizer, prompts
        self.default_category, self.unrouted_reward = default_category, float(unrouted_reward)
        self.last_batch: Optional[RewardBatch] = None  # the latest call's details, for callbacks and logs
        self._marker: Optional[list[int]] = None

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **_unused):
        from transformers.modeling_outputs import BaseModelOutput

        if attention_mask is None:
            attention_mask = input_ids != self.tokenizer.pad_token_id
        rewards = self.rewards(input_ids, attention_mask)
        hidden = rewards.to(input_ids.device)[:, None, None].repeat(1, input_ids.shape[1], 1)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(hidden,))

    @torch.no_grad()
    def rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B] float32 rewards of B padded (prompt + response) sequences."""
        ids, mask = input_ids.tolist(), attention_mask.bool().tolist()
        rows = [[(j, t) for j, (t, m) in enumerate(zip(r, k)) if m] for r, k in zip(ids, mask)]
        cut = self._split_column(rows)
        conversations, completions, categories, types = [], [], [], []
        for row in rows:
            prompt = [t for j, t in row if j < cut]
            entry = self.prompts.get(prompt) if self.prompts is not None else None
            if entry is None:
                text = self.tokenizer.decode(prompt, skip_special_tokens=True)
                entry = PromptEntry(({"role": "user", "content": text},), self.default_category, None)
            conversations.append([dict(m) for m in entry.conversation])
            completions.append(self.tokenizer.decode([t for j, t in row if j >= cut], skip_special_tokens=True))
            categories.append(entry.category)
            types.append(entry.response_type)
        batch = self.reward(conversations, completions, categories=categories, response_types=types)
        self.last_batch = batch
        # PPO needs a number per sequence: the unrouted rule with this model's `unrouted_reward`.
        return torch.tensor(batch.numbers(self.unrouted_reward), dtype=torch.float32)

    def _split_column(self, rows: list) -> int:
        """The column where every sequence's response starts (PPO's context_length)."""
        votes: Counter = Counter()
        if self.prompts is not None:
            for row in rows:
                lengths = self.prompts.prefix_lengths([t for _, t in row])
                if lengths:
                    n = lengths[0]
                    # The first response column; for an empty response, the one after the prompt.
                    votes[row[n][0] if n < len(row) else row[n - 1][0] + 1] += 1
        if votes:
            return votes.most_common(1)[0][0]
        marker = self._generation_prompt()
        ends = None
        for row in rows:
            toks = [t for _, t in row]
            here = {row[i + len(marker) - 1][0] + 1 for i in range(len(toks) - len(marker) + 1)
                    if toks[i:i + len(marker)] == marker}
            ends = here if ends is None else ends & here
        if not ends:
            raise PolicyError("cannot tell where the prompts end: no sequence starts with a prompt of the "
                              "PromptTable, and the policy's generation prompt is not at one column in all of "
                              "them; build the PromptTable from the conversations the PPO dataset was made of")
        return max(ends)

    def _generation_prompt(self) -> list[int]:
        if self._marker is None:
            msgs = [{"role": "user", "content": "x"}]
            try:
                with_gp = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                without = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
            except Exception as exc:  # no chat template: nothing to split at
                raise PolicyError(f"no PromptTable match and no chat template to find the prompt end: {exc}") from None
            if not with_gp.startswith(without) or with_gp == without:
                raise PolicyError("no PromptTable match, and the chat template's generation prompt is not a "
                                  "suffix; build a PromptTable from the training conversations")
            self._marker = list(self.tokenizer(with_gp[len(without):], add_special_tokens=False)["input_ids"])
        return self._marker


class RBRRewardModel(nn.Module):
    """PPOTrainer's `reward_model`: the backbone `rbr` (an `RBRScorer`) plus an
    identity `score` head, so `score(backbone(...).hidden_states[-1])` is the
    reward at every position.

    Args:
        reward: an `RBRReward` (policy, grader, optional RM added to the RBR reward).
        tokenizer: the policy tokenizer.
        prompts: a `PromptTable` of the training conversations (strongly
            advised: without it each prompt is graded as one user message of
            decoded chat markup, under `default_category`).
        default_category: the category of a prompt not in the table (None: no
            route, so `unrouted_reward` unless the RBRReward has an RM).
        unrouted_reward: the reward where the policy has no route and there is no RM.

    The grader is not a submodule: `.to(device)` (PPOTrainer moves the reward
    model) leaves it where it was loaded (`HFGrader.from_pretrained(..., device=)`).
    Run PPO with plain data parallelism (`accelerate launch`); under DeepSpeed
    PPOTrainer wraps the reward model in `deepspeed.initialize`, which expects
    a transformers model with weights (not tried).
    """

    base_model_prefix = "rbr"

    def __init__(self, reward: RBRReward, tokenizer, prompts: Optional[PromptTable] = None,
                 default_category: Optional[str] = None, unrouted_reward: float = UNROUTED_REWARD):
        super().__init__()
        self.rbr = RBRScorer(reward, tokenizer, prompts, default_category, unrouted_reward)
        self.score = nn.Identity()

    @property
    def last_batch(self) -> Optional[RewardBatch]:
        """The `RewardBatch` of the latest call (class probabilities per sequence, RBR and RM parts)."""
        return self.rbr.last_batch

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """[B, T, 1]: each sequence's reward at every position."""
        return self.score(self.rbr(input_ids, attention_mask).hidden_states[-1])


def _freeze(message: Mapping) -> tuple:
    return tuple(sorted((str(k), v) for k, v in message.items()))
