"""HFGrader: P(yes) for every proposition with a transformers causal LM.

Speed comes from the shape of the work (see ARCHITECTURE.md): each
proposition's static prefix is forwarded once and its key/value cache kept;
items are grouped per proposition into length-sorted, right-padded batches
under a token budget that reuse that cache; and vocabulary logits are computed
only at each row's last real token.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from ..policy import CompiledPolicy
from .answers import AnswerTokens, GraderError, answer_tokens, yes_probability
from .attention import use_fused_prefix_attention
from .batching import plan_batches
from .cache import GradeCache, item_key
from .prompts import Encoded, PromptEncoder


@dataclass
class GradeStats:
    items: int = 0
    graded: int = 0  # (item, proposition) pairs forwarded through the model
    cached: int = 0
    matched: int = 0  # `matches` propositions: no model call
    prefix_tokens: int = 0  # forwarded once per proposition
    suffix_tokens: int = 0  # real tokens after the prefix
    padded_tokens: int = 0  # suffix tokens including padding
    batches: int = 0
    oom_splits: int = 0
    low_mass: int = 0
    dropped_turns: int = 0

    @property
    def forwarded(self) -> int:
        return self.prefix_tokens + self.padded_tokens


@dataclass(frozen=True)
class Grades:
    p_yes: torch.Tensor  # [N, P] in the policy's proposition order
    answer_mass: torch.Tensor  # [N, P]; 1 for `matches` propositions
    stats: GradeStats = field(compare=False)


class HFGrader:
    def __init__(self, model, tokenizer, *, use_chat_template: Optional[bool] = None, token_budget: int = 16384,
                 max_batch: int = 64, cache: GradeCache | str | Path | None = None, truncate: str = "error",
                 min_answer_mass: float = 0.5, model_id: Optional[str] = None, fused_attention: bool = True):
        self.model = model.eval()
        # Rows continue a cached prefix; give SDPA a fused kernel for that (see attention.py).
        self.fused_attention = fused_attention and use_fused_prefix_attention(model)
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        limit = getattr(model.config, "max_position_embeddings", None)
        self.encoder = PromptEncoder(tokenizer, use_chat_template, limit, truncate)
        self.token_budget = token_budget
        self.max_batch = max_batch
        self.cache = GradeCache(cache) if isinstance(cache, (str, Path)) else cache
        self.min_answer_mass = min_answer_mass
        self._kv: dict[tuple, tuple] = {}  # (template, proposition) -> prefix key/values, kept for our lifetime
        self._answers: dict[tuple, AnswerTokens] = {}
        base = model.base_model
        self._base = base
        self._head = model.get_output_embeddings()
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        params = inspect.signature(base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.identity = model_id or _identity(model, self.encoder.chat)

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str = "auto", dtype: str | torch.dtype = "auto",
                        attn_implementation: str = "sdpa", **kwargs) -> "HFGrader":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype, attn_implementation=attn_implementation)
        return cls(model.to(device), tokenizer, **kwargs)

    # --- inspection -----------------------------------------------------------------
    def answer_tokens(self, policy: CompiledPolicy) -> AnswerTokens:
        key = (policy.yes, policy.no)
        if key not in self._answers:
            self._answers[key] = answer_tokens(self.tokenizer, policy.yes, policy.no)
        return self._answers[key]

    def encode(self, policy: CompiledPolicy, proposition: str, conversation, response: str) -> list[int]:
        """The exact prompt token ids graded for one item."""
        return list(self.encoder.encode(policy, proposition, conversation, response).ids)

    # --- grading ----------------------------------------------------------------------
    def grade(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str]) -> torch.Tensor:
        """`[N, P]` P(yes) in the policy's proposition order."""
        return self.grade_detailed(policy, conversations, responses).p_yes

    @torch.no_grad()
    def grade_detailed(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str]) -> Grades:
        if len(conversations) != len(responses):
            raise GraderError(f"{len(conversations)} conversations but {len(responses)} responses")
        n, names = len(responses), policy.proposition_names
        p_yes = torch.zeros(n, len(names), dtype=torch.float64)
        mass = torch.ones(n, len(names), dtype=torch.float64)
        stats = GradeStats(items=n)
        answers = self.answer_tokens(policy)
        for j, prop in enumerate(policy.propositions):
            if prop.kind == "matches":
                for i, r in enumerate(responses):
                    p_yes[i, j] = float(policy.matches(prop.name, r))
                stats.matched += n
                continue
            todo = list(range(n))
            keys = []
            if self.cache is not None:
                sha = hashlib.sha256(prop.template.encode()).hexdigest()
                keys = [item_key(self.identity, sha, conversations[i], responses[i]) for i in range(n)]
                hits = self.cache.get_many(keys)
                todo = []
                for i in range(n):
                    if keys[i] in hits:
                        p_yes[i, j], mass[i, j] = hits[keys[i]]
                        stats.cached += 1
                    else:
                        todo.append(i)
            if not todo:
                continue
            encoded = [self.encoder.encode(policy, prop.name, conversations[i], responses[i], item=i) for i in todo]
            stats.dropped_turns += sum(e.dropped_turns for e in encoded)
            p, m = self._grade_encoded(policy, prop.name, encoded, answers, stats, todo)
            for k, i in enumerate(todo):
                p_yes[i, j], mass[i, j] = p[k], m[k]
            if self.cache is not None:
                self.cache.put_many((keys[i], p[k], m[k]) for k, i in enumerate(todo))
        low = mass < self.min_answer_mass
        stats.low_mass = int(low.sum())
        if stats.low_mass:
            warnings.warn(f"the grader put less than {self.min_answer_mass:.0%} of its next-token probability on "
                          f"yes/no answers for {stats.low_mass} of {low.numel()} gradings (lowest "
                          f"{float(mass.min()):.2e}); check the grader model and the policy's yes/no spellings",
                          GraderWarning, stacklevel=2)
        return Grades(p_yes.float(), mass.float(), stats)

    def _grade_encoded(self, policy, proposition, encoded: list[Encoded], answers, stats, items):
        out_p = [0.0] * len(encoded)
        out_m = [0.0] * len(encoded)
        job = _Job(proposition, answers, stats, items, out_p, out_m)
        shared = [k for k, e in enumerate(encoded) if e.prefix_len]
        alone = [k for k, e in enumerate(encoded) if not e.prefix_len]
        if shared:
            offset = encoded[shared[0]].prefix_len
            kv = self._prefix_kv(policy, proposition, encoded[shared[0]].ids[:offset], stats)
            self._run([encoded[k].ids[offset:] for k in shared], shared, kv, offset, job)
        if alone:  # no reusable prefix (a template that branches): the whole prompt
            self._run([encoded[k].ids for k in alone], alone, None, 0, job)
        return out_p, out_m

    def _prefix_kv(self, policy, proposition, ids, stats):
        key = (policy.proposition(proposition).template, proposition, tuple(ids))
        if key not in self._kv:
            out = self._base(input_ids=torch.tensor([list(ids)], device=self.device), use_cache=True)
            cache = out.get("cache", None) or out.get("past_key_values")
            self._kv[key] = tuple((layer.keys, layer.values) for layer in cache.layers)
            stats.prefix_tokens += len(ids)
        return self._kv[key]

    def _run(self, rows, slots, kv, offset, job):
        """`rows[r]` is graded into output position `slots[r]`."""
        for batch in plan_batches([len(r) for r in rows], self.token_budget, self.max_batch):
            self._forward_batch([rows[r] for r in batch], [slots[r] for r in batch], kv, offset, job)

    def _forward_batch(self, rows, slots, kv, offset, job):
        try:
            logits = self._last_logits(rows, kv, offset)
        except torch.OutOfMemoryError:
            if len(rows) == 1:
                raise GraderError(f"out of memory grading item {job.items[slots[0]]} (proposition "
                                  f"`{job.proposition}`) even alone; use a smaller dtype or a larger device")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            job.stats.oom_splits += 1
            self.max_batch = max(1, len(rows) // 2)  # stay smaller for the rest of the run
            half = len(rows) // 2
            self._forward_batch(rows[:half], slots[:half], kv, offset, job)
            self._forward_batch(rows[half:], slots[half:], kv, offset, job)
            return
        bad = ~torch.isfinite(logits).all(dim=-1)
        if bool(bad.any()):
            first = slots[int(bad.nonzero()[0])]
            raise GraderError(f"the grader produced NaN or infinite logits for item {job.items[first]} "
                              f"(proposition `{job.proposition}`); no reward is given for it")
        p, m = yes_probability(logits, job.answers)
        for k, slot in enumerate(slots):
            job.out_p[slot], job.out_m[slot] = float(p[k]), float(m[k])
        stats = job.stats
        stats.batches += 1
        stats.graded += len(rows)
        stats.suffix_tokens += sum(len(r) for r in rows)
        stats.padded_tokens += max(len(r) for r in rows) * len(rows)

    def _last_logits(self, rows, kv, offset) -> torch.Tensor:
        """Vocabulary logits at each row's last real token, `[B, V]`."""
        b, width = len(rows), max(len(r) for r in rows)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        ids = ids.to(self.device)
        kwargs = {"input_ids": ids, "use_cache": kv is not None}
        if kv is not None:
            from transformers import DynamicCache

            # Right padding: a real token only attends to positions before it,
            # all real, so the causal mask alone is exact and padding is inert.
            kwargs[self._cache_arg] = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1))
                                                                   for k, v in kv])
            kwargs["position_ids"] = torch.arange(offset, offset + width, device=self.device)[None].expand(b, -1)
        hidden = self._base(**kwargs).last_hidden_state
        last = torch.tensor([len(r) - 1 for r in rows], device=self.device)
        logits = self._head(hidden[torch.arange(b, device=self.device), last]).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits


class GraderWarning(UserWarning):
    pass


@dataclass
class _Job:
    """One proposition's grading in progress."""

    proposition: str
    answers: AnswerTokens
    stats: GradeStats
    items: list  # output position -> item index, for error messages
    out_p: list
    out_m: list


def _identity(model, chat: bool) -> str:
    """What makes two graders give the same answers: weights, config, dtype, prompt form."""
    config = model.config.to_json_string(use_diff=False)
    fingerprint = hashlib.sha256()
    path = Path(str(getattr(model.config, "_name_or_path", "") or ""))
    if path.is_dir():
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            st = f.stat()
            fingerprint.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:  # weights in memory only: hash a sample of every parameter
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            fingerprint.update(name.encode() + flat[:: max(1, flat.numel() // 64)].float().cpu().numpy().tobytes())
    return json.dumps({"config": hashlib.sha256(config.encode()).hexdigest(), "weights": fingerprint.hexdigest(),
                       "dtype": str(next(model.parameters()).dtype), "chat": chat, "path": str(path)})


def grade_features(grader: HFGrader, policy: CompiledPolicy, response_type: str, conversations, responses):
    """Convenience: `[N, F]` features for one response type."""
    return policy.features(response_type, grader.grade(policy, conversations, responses))


__all__ = ["HFGrader", "Grades", "GradeStats", "GraderError", "GraderWarning", "grade_features"]
