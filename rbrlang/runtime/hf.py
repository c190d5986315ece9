"""HFGrader: P(yes) for every proposition with a transformers causal LM.

Speed comes from the shape of the work. Rows ((item, proposition) prompts)
share prefixes (see encoding.py): with a static-first template each
proposition's instructions and examples are forwarded once and their key/value
cache kept for the grader's lifetime; with a conversation-first template each
item's conversation and response are forwarded once and shared by all its
propositions. The layout that forwards fewer tokens is chosen per call. The
rest of each row runs in length-sorted, right-padded batches under a token
budget on top of the shared cache, and vocabulary logits are computed only at
each row's last real token.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..policy import CompiledPolicy
from .answers import AnswerTokens, GraderError, yes_probability
from .attention import use_fused_prefix_attention
from .base import EncodedGrader, Grades, GradeStats, GraderWarning, device_and_dtype  # shared by every backend
from .batching import plan_batches
from .cache import GradeCache, item_key
from .encoding import Encoded, PromptEncoder


class HFGrader(EncodedGrader):
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
        self._kv: dict[tuple, tuple] = {}  # a proposition's prefix -> its key/values, kept for our lifetime
        self._answers: dict[tuple, AnswerTokens] = {}
        self._base = model.base_model
        self._head = model.get_output_embeddings()
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        params = inspect.signature(self._base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.identity = model_id or _identity(model, self.encoder.chat)
        self.stats = GradeStats()  # running totals over the grader's lifetime (base.Grader)

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str = "auto", dtype: str | torch.dtype = "auto",
                        attn_implementation: str = "sdpa", **kwargs) -> "HFGrader":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device, dtype = device_and_dtype(device, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype, attn_implementation=attn_implementation)
        return cls(model.to(device), tokenizer, **kwargs)

    # --- grading ----------------------------------------------------------------------
    @torch.no_grad()
    def grade_detailed(self, policy: CompiledPolicy, conversations: Sequence, responses: Sequence[str]) -> Grades:
        if len(conversations) != len(responses):
            raise GraderError(f"{len(conversations)} conversations but {len(responses)} responses")
        n, names = len(responses), policy.proposition_names
        job = _Job(names, self.answer_tokens(policy), GradeStats(items=n),
                   torch.zeros(n, len(names), dtype=torch.float64), torch.ones(n, len(names), dtype=torch.float64))
        for j, prop in enumerate(policy.propositions):
            if not prop.graded:
                for i, r in enumerate(responses):
                    job.p_yes[i, j] = float(policy.matches(prop.name, r))
                job.stats.matched += n
        todo, keys = self._lookup(policy, conversations, responses, job)
        by_item: dict[int, list[int]] = {}
        for i, j in todo:
            by_item.setdefault(i, []).append(j)
        rows = []
        order = sorted(by_item)
        encoded_items = self.encoder.encode_items(policy, [conversations[i] for i in order],
                                                  [responses[i] for i in order], order)
        for i, encoded in zip(order, encoded_items):
            job.stats.dropped_turns += next(iter(encoded.values())).dropped_turns
            rows += [_Row(i, j, encoded[names[j]]) for j in by_item[i]]
        if rows:
            job.stats.layout = self._layout(rows)
            (self._grade_by_item if job.stats.layout == "item" else self._grade_by_proposition)(rows, job)
        if self.cache is not None and todo:
            self.cache.put_many((keys[s], float(job.p_yes[s]), float(job.mass[s])) for s in todo)
        low = job.mass < self.min_answer_mass
        job.stats.low_mass = int(low.sum())
        if job.stats.low_mass:
            warnings.warn(f"the grader put less than {self.min_answer_mass:.0%} of its next-token probability on "
                          f"yes/no answers for {job.stats.low_mass} of {low.numel()} gradings (lowest "
                          f"{float(job.mass.min()):.2e}); check the grader model and the policy's yes/no spellings",
                          GraderWarning, stacklevel=2)
        self.stats.add(job.stats)
        return Grades(job.p_yes.float(), job.mass.float(), job.stats)

    def _lookup(self, policy, conversations, responses, job):
        """The (item, proposition) slots still to grade, after the grade cache."""
        todo, keys = [], {}
        for j, prop in enumerate(policy.propositions):
            if not prop.graded:
                continue
            slots = [(i, j) for i in range(len(responses))]
            if self.cache is not None:
                # P(yes) depends on the whole prompt and on which tokens count as answers.
                sha = hashlib.sha256(json.dumps([prop.template, policy.yes, policy.no]).encode()).hexdigest()
                for i, s in enumerate(slots):
                    keys[s] = item_key(self.identity, sha, conversations[i], responses[i])
                hits = self.cache.get_many([keys[s] for s in slots])
                for s in slots:
                    if keys[s] in hits:
                        job.p_yes[s], job.mass[s] = hits[keys[s]]
                        job.stats.cached += 1
                slots = [s for s in slots if keys[s] not in hits]
            todo += slots
        return todo, keys

    @staticmethod
    def _layout(rows: list["_Row"]) -> str:
        """Share per proposition (static-first templates) or per item
        (conversation-first templates): whichever forwards fewer tokens."""
        by_prop = sum(len(r.enc.ids) - r.enc.prop_prefix for r in rows) + sum(
            len(p) for p in {r.enc.ids[:r.enc.prop_prefix] for r in rows})
        items = {r.item: r.enc for r in rows}
        by_item = sum(len(r.enc.ids) - r.enc.item_prefix for r in rows) + sum(
            e.item_prefix - e.head for e in items.values()) + sum(len(h) for h in {r.enc.ids[:r.enc.head] for r in rows})
        return "item" if by_item < by_prop else "proposition"

    def _grade_by_proposition(self, rows, job):
        groups: dict[tuple, list[_Row]] = {}
        for r in rows:
            groups.setdefault(r.enc.ids[:r.enc.prop_prefix], []).append(r)
        for prefix, group in groups.items():
            kv = self._prefix_kv(prefix, job.stats) if prefix else None
            self._run([r.enc.ids[len(prefix):] for r in group], [r.slot for r in group], kv, len(prefix), job)

    def _grade_by_item(self, rows, job):
        heads: dict[tuple, dict[int, list[_Row]]] = {}
        for r in rows:
            heads.setdefault(r.enc.ids[:r.enc.head], {}).setdefault(r.item, []).append(r)
        for head, items in heads.items():
            kv_head = self._prefix_kv(head, job.stats) if head else None
            order = list(items)
            middles = [items[i][0].enc.ids[len(head):items[i][0].enc.item_prefix] for i in order]
            for batch in plan_batches([len(m) for m in middles], self.token_budget, self.max_batch):
                kvs = self._extend(kv_head, len(head), [middles[b] for b in batch], job.stats)
                for b, kv in zip(batch, kvs):
                    group = items[order[b]]
                    offset = len(head) + len(middles[b])
                    self._run([r.enc.ids[offset:] for r in group], [r.slot for r in group], kv, offset, job)

    def _prefix_kv(self, ids: tuple, stats) -> tuple:
        """Key/values of a shared prefix, computed once and kept for the grader's lifetime."""
        if ids not in self._kv:
            (self._kv[ids],) = self._extend(None, 0, [ids], stats)
        return self._kv[ids]

    def _extend(self, kv, offset: int, rows: list, stats) -> list:
        """Key/values of `rows`, each continuing `kv`; empty rows reuse `kv`."""
        if not any(rows):
            return [kv] * len(rows)
        b, width = len(rows), max(len(r) for r in rows)
        try:
            out = self._base(**self._inputs(rows, kv, offset), use_cache=True)
        except torch.OutOfMemoryError:
            if b == 1:
                raise GraderError("out of memory computing a shared prompt prefix; use a smaller dtype or a "
                                  "larger device")
            self._free()
            stats.oom_splits += 1
            return self._extend(kv, offset, rows[: b // 2], stats) + self._extend(kv, offset, rows[b // 2:], stats)
        stats.prefix_tokens += b * width
        cache = out.get("cache", None) or out.get("past_key_values")
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return [tuple((k[r:r + 1, :, :offset + len(rows[r])], v[r:r + 1, :, :offset + len(rows[r])])
                      for k, v in layers) for r in range(b)]

    def _run(self, rows, slots, kv, offset, job):
        """`rows[r]` (continuing `kv`) is graded into output slot `slots[r]`."""
        for batch in plan_batches([len(r) for r in rows], self.token_budget, self.max_batch):
            self._forward_batch([rows[r] for r in batch], [slots[r] for r in batch], kv, offset, job)

    def _forward_batch(self, rows, slots, kv, offset, job):
        try:
            logits = self._last_logits(rows, kv, offset)
        except torch.OutOfMemoryError:
            if len(rows) == 1:
                raise GraderError(f"out of memory grading {job.where(slots[0])} even alone; "
                                  "use a smaller dtype or a larger device")
            self._free()
            job.stats.oom_splits += 1
            self.max_batch = max(1, len(rows) // 2)  # stay smaller for the rest of the run
            half = len(rows) // 2
            self._forward_batch(rows[:half], slots[:half], kv, offset, job)
            self._forward_batch(rows[half:], slots[half:], kv, offset, job)
            return
        bad = ~torch.isfinite(logits).all(dim=-1)
        if bool(bad.any()):
            raise GraderError(f"the grader produced NaN or infinite logits for {job.where(slots[int(bad.nonzero()[0])])}; "
                              "no reward is given for it")
        p, m = yes_probability(logits, job.answers)
        for k, slot in enumerate(slots):
            job.p_yes[slot], job.mass[slot] = float(p[k]), float(m[k])
        stats = job.stats
        stats.batches += 1
        stats.graded += len(rows)
        stats.suffix_tokens += sum(len(r) for r in rows)
        stats.padded_tokens += max(len(r) for r in rows) * len(rows)

    def _free(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _inputs(self, rows, kv, offset) -> dict:
        """Right-padded ids continuing `kv` (expanded to the batch) at `offset`."""
        b, width = len(rows), max(len(r) for r in rows)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        inputs = {"input_ids": ids.to(self.device)}
        if kv is not None:
            from transformers import DynamicCache

            # Right padding: a real token only attends to positions before it,
            # all real, so the causal mask alone is exact and padding is inert.
            inputs[self._cache_arg] = DynamicCache(ddp_cache_data=[
                (k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv])
            inputs["position_ids"] = torch.arange(offset, offset + width, device=self.device)[None].expand(b, -1)
        return inputs

    def _last_logits(self, rows, kv, offset) -> torch.Tensor:
        """Vocabulary logits at each row's last real token only, `[B, V]`."""
        hidden = self._base(**self._inputs(rows, kv, offset), use_cache=kv is not None).last_hidden_state
        b = len(rows)
        last = torch.tensor([len(r) - 1 for r in rows], device=self.device)
        logits = self._head(hidden[torch.arange(b, device=self.device), last]).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits


@dataclass(frozen=True)
class _Row:
    """One (item, proposition) prompt to grade."""

    item: int
    prop: int
    enc: Encoded

    @property
    def slot(self) -> tuple[int, int]:
        return (self.item, self.prop)


@dataclass
class _Job:
    """One grade call in progress: where answers go, and what it cost."""

    names: tuple
    answers: AnswerTokens
    stats: GradeStats
    p_yes: torch.Tensor  # [N, P]
    mass: torch.Tensor

    def where(self, slot) -> str:
        return f"item {slot[0]} (proposition `{self.names[slot[1]]}`)"


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


__all__ = ["HFGrader", "Grades", "GradeStats", "GraderError", "GraderWarning"]
