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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .answers import AnswerTokens, GraderError, yes_probability
from .attention import register, use_fused_prefix_attention
from .base import BaseGrader, Grades, GradeStats, GraderWarning, Row, device_and_dtype, file_fingerprint
from .batching import plan_batches
from .cpu_kernels import prepare as prepare_kernels
from .gguf import check_gguf, is_gguf, split
from .options import GraderOptions


class HFGrader(BaseGrader):
    """Grade with a transformers causal LM in this process.

    Args:
        model, tokenizer: a loaded causal LM and its tokenizer
            (`HFGrader.from_pretrained` loads both).
        options: the options every backend takes (`GraderOptions`); its
            fields also work as keyword arguments (`cache=`, `truncate=`, ...).
            `max_length` defaults to the model's `max_position_embeddings`.
        token_budget: padded tokens per forward batch; max_batch: rows per batch.
        model_id: the grader's identity for the grade cache (default: from the
            config, the weights' files and the dtype).
        fused_attention: rows after a cached prefix use a fused SDPA kernel
            (attention.py).
        kernels: "auto" (the default): fp32 linear layers on a CPU take oneDNN
            where a start-up probe finds it exact, else MKL pinned to fp32;
            "stock": torch's own settings (cpu_kernels.py; `self.kernels` says
            what was chosen and why).

    Pickles with its model and tokenizer (as large as the model); its grade
    cache goes as its path and the prefix key/values are not kept.
    """

    def __init__(self, model, tokenizer, options: Optional[GraderOptions] = None, *, token_budget: int = 16384,
                 max_batch: int = 64, model_id: Optional[str] = None, fused_attention: bool = True,
                 kernels: str = "auto", **option_values):
        self.model = model.eval()
        self.kernels = prepare_kernels(model, kernels)
        # Rows continue a cached prefix; give SDPA a fused kernel for that (see attention.py).
        self.fused_attention = fused_attention and use_fused_prefix_attention(model)
        self.device = next(model.parameters()).device
        super().__init__(tokenizer, GraderOptions.of(options, **option_values),
                         getattr(model.config, "max_position_embeddings", None))
        self.token_budget = token_budget
        self.max_batch = max_batch
        self._kv: dict[tuple, tuple] = {}  # a proposition's prefix -> its key/values, kept for our lifetime
        self._base = model.base_model
        self._head = model.get_output_embeddings()
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        params = inspect.signature(self._base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.identity = model_id or _identity(model, self.encoder.chat)

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str = "auto", dtype: str | torch.dtype = "auto",
                        attn_implementation: str = "sdpa", **kwargs) -> "HFGrader":
        """Load a model folder, a hub id, or one GGUF file (`….gguf`: its tokenizer and chat
        template come from the file; every tensor is dequantised to `dtype` as it loads,
        see runtime/gguf.py). `kwargs` go to `HFGrader(...)`."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device, dtype = device_and_dtype(device, dtype)
        if is_gguf(path_or_id):
            # One GGUF file: transformers reads it from its folder and dequantises every tensor to `dtype`.
            check_gguf(path_or_id)
            folder, name = split(path_or_id)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype,
                                                         attn_implementation=attn_implementation)
            # transformers records the folder; the grader's identity (the grade cache's key) is the file.
            model.config._name_or_path = str(Path(folder) / name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype,
                                                         attn_implementation=attn_implementation)
        return cls(model.to(device), tokenizer, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_kv"] = {}  # tensors as large as the prompts' prefixes; recomputed on first use
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.fused_attention:  # the model's config names our kernel; a fresh process has not registered it
            register()
        self.kernels = prepare_kernels(self.model, self.kernels.requested)  # this CPU's answer, not the pickler's

    # --- scoring rows (base.BaseGrader runs the rest) ---------------------------------------
    def _score(self, rows, answers, stats):
        job = _Job(rows, answers, stats, torch.zeros(len(rows), dtype=torch.float64),
                   torch.ones(len(rows), dtype=torch.float64))
        stats.layout = self._layout(rows)
        with torch.no_grad():
            (self._grade_by_item if stats.layout == "item" else self._grade_by_proposition)(job)
        return job.p_yes, job.mass

    @staticmethod
    def _layout(rows: list[Row]) -> str:
        """Share per proposition (static-first templates) or per item
        (conversation-first templates): whichever forwards fewer tokens."""
        by_prop = sum(len(r.enc.ids) - r.enc.prop_prefix for r in rows) + sum(
            len(p) for p in {r.enc.ids[:r.enc.prop_prefix] for r in rows})
        items = {r.item: r.enc for r in rows}
        by_item = sum(len(r.enc.ids) - r.enc.item_prefix for r in rows) + sum(
            e.item_prefix - e.head for e in items.values()) + sum(len(h) for h in {r.enc.ids[:r.enc.head] for r in rows})
        return "item" if by_item < by_prop else "proposition"

    # A row's place in `job.rows` is its slot: where _forward_batch writes its answer.
    def _grade_by_proposition(self, job):
        groups: dict[tuple, list[int]] = {}
        for k, r in enumerate(job.rows):
            groups.setdefault(r.enc.ids[:r.enc.prop_prefix], []).append(k)
        for prefix, group in groups.items():
            kv = self._prefix_kv(prefix, job.stats) if prefix else None
            self._run([job.rows[k].enc.ids[len(prefix):] for k in group], group, kv, len(prefix), job)

    def _grade_by_item(self, job):
        heads: dict[tuple, dict[int, list[int]]] = {}
        for k, r in enumerate(job.rows):
            heads.setdefault(r.enc.ids[:r.enc.head], {}).setdefault(r.item, []).append(k)
        for head, items in heads.items():
            kv_head = self._prefix_kv(head, job.stats) if head else None
            order = list(items)
            firsts = [job.rows[items[i][0]].enc for i in order]
            middles = [e.ids[len(head):e.item_prefix] for e in firsts]
            for batch in plan_batches([len(m) for m in middles], self.token_budget, self.max_batch):
                kvs = self._extend(kv_head, len(head), [middles[b] for b in batch], job.stats)
                for b, kv in zip(batch, kvs):
                    group = items[order[b]]
                    offset = len(head) + len(middles[b])
                    self._run([job.rows[k].enc.ids[offset:] for k in group], group, kv, offset, job)

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
                raise GraderError(f"out of memory grading {job.rows[slots[0]].where} even alone; "
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
            raise GraderError(f"the grader produced NaN or infinite logits for "
                              f"{job.rows[slots[int(bad.nonzero()[0])]].where}; "
                              "no reward is given for it")
        p, m = yes_probability(logits, job.answers)
        for k, slot in enumerate(slots):
            job.p_yes[slot], job.mass[slot] = float(p[k]), float(m[k])
        stats = job.stats
        stats.batches += 1
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


@dataclass
class _Job:
    """One `_score` call in progress: the rows, where their answers go, what it cost."""

    rows: list[Row]
    answers: AnswerTokens
    stats: GradeStats
    p_yes: torch.Tensor  # [R]
    mass: torch.Tensor


def _identity(model, chat: bool) -> str:
    """What makes two graders give the same answers: weights, config, dtype, prompt form."""
    config = model.config.to_json_string(use_diff=False)
    path = Path(str(getattr(model.config, "_name_or_path", "") or ""))
    if path.is_dir() or (path.is_file() and is_gguf(path)):
        weights = file_fingerprint(path)
    else:  # weights in memory only: hash a sample of every parameter
        sample = hashlib.sha256()
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            sample.update(name.encode() + flat[:: max(1, flat.numel() // 64)].float().cpu().numpy().tobytes())
        weights = sample.hexdigest()
    return json.dumps({"config": hashlib.sha256(config.encode()).hexdigest(), "weights": weights,
                       "dtype": str(next(model.parameters()).dtype), "chat": chat, "path": str(path)})


__all__ = ["HFGrader", "Grades", "GradeStats", "GraderError", "GraderWarning"]
