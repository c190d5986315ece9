"""HFGrader: P(yes) for every proposition with a transformers causal LM.

Speed comes from the shape of the work. Rows ((item, proposition) prompts)
share prefixes (see encoding.py): with a static-first template each
proposition's instructions and examples are forwarded once and their key/value
cache kept for the grader's lifetime; with a conversation-first template each
item's conversation and response are forwarded once and shared by all its
propositions. The layout that forwards fewer tokens is chosen per call.

The rest of each row is packed (`packed=True`, the default): the rows of one
or more shared prefixes laid end to end in one sequence without padding, each
row's positions restarting after its prefix, the prefixes' key/values given
once as the cache, and attention.PackedRows telling the attention which keys
each row sees; items' conversations are packed the same way after the common
head. `packed=False` keeps the earlier path (length-sorted, right-padded
batches with the prefix expanded per row), for comparison and for attention
kernels other than ours. Vocabulary logits are computed only at each row's
last token, and the answers stay on the device until the call's end: one copy
to the host and one finiteness check per call, not per row.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .answers import AnswerTokens, GraderError, yes_probability
from .attention import PackedRows, register, use_fused_prefix_attention
from .base import BaseGrader, Grades, GradeStats, GraderWarning, Row, device_and_dtype, file_fingerprint
from .batching import plan_batches, plan_packs
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
        packed: rows after a shared prefix go as packed sequences, no
            padding (needs `fused_attention`, which reads the layout; off for
            sliding-window or soft-capped attention); False: right-padded batches.

    Pickles with its model and tokenizer (as large as the model); its grade
    cache goes as its path and the prefix key/values are not kept.
    """

    def __init__(self, model, tokenizer, options: Optional[GraderOptions] = None, *, token_budget: int = 16384,
                 max_batch: int = 64, model_id: Optional[str] = None, fused_attention: bool = True,
                 kernels: str = "auto", packed: bool = True, **option_values):
        self.model = model.eval()
        self.kernels = prepare_kernels(model, kernels)
        # Rows continue a cached prefix; give SDPA a fused kernel for that (see attention.py).
        self.fused_attention = fused_attention and use_fused_prefix_attention(model)
        self.packed = packed and self.fused_attention and _plain_attention(model.config)
        self.device = next(model.parameters()).device
        super().__init__(tokenizer, GraderOptions.of(options, **option_values),
                         getattr(model.config, "max_position_embeddings", None))
        self.token_budget = token_budget
        self.max_batch = max_batch
        self.pack_budget = token_budget  # tokens per packed forward; halved for the rest of a run on running out of memory
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
        job = _Job(rows, answers, stats)
        stats.layout = self._layout(rows)
        with torch.no_grad():
            (self._grade_by_item if stats.layout == "item" else self._grade_by_proposition)(job)
        return job.results()

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

    # A row's place in `job.rows` is its slot: where its answer is written.
    # A group is (kv, offset, rows, slots): rows continuing the cached key/values
    # `kv` of the first `offset` positions (None and 0: no prefix).
    def _grade_by_proposition(self, job):
        groups: dict[tuple, list[int]] = {}
        for k, r in enumerate(job.rows):
            groups.setdefault(r.enc.ids[:r.enc.prop_prefix], []).append(k)
        todo = []
        for prefix, group in groups.items():
            kv = self._prefix_kv(prefix, job.stats) if prefix else None
            todo.append((kv, len(prefix), [job.rows[k].enc.ids[len(prefix):] for k in group], group))
        self._run_groups(todo, job)

    def _grade_by_item(self, job):
        heads: dict[tuple, dict[int, list[int]]] = {}
        for k, r in enumerate(job.rows):
            heads.setdefault(r.enc.ids[:r.enc.head], {}).setdefault(r.item, []).append(k)
        for head, items in heads.items():
            kv_head = self._prefix_kv(head, job.stats) if head else None
            order = list(items)
            firsts = [job.rows[items[i][0]].enc for i in order]
            middles = [e.ids[len(head):e.item_prefix] for e in firsts]
            if self.packed:  # the conversations packed after the head, then their items' rows packed
                batches = [rows for ((_, rows),) in plan_packs([[len(m) for m in middles]], self.pack_budget)]
            else:
                batches = plan_batches([len(m) for m in middles], self.token_budget, self.max_batch)
            for batch in batches:
                kvs = (self._extend_packed if self.packed else self._extend)(
                    kv_head, len(head), [middles[b] for b in batch], job.stats)
                todo = []
                for b, kv in zip(batch, kvs):
                    group = items[order[b]]
                    offset = len(head) + len(middles[b])
                    todo.append((kv, offset, [job.rows[k].enc.ids[offset:] for k in group], group))
                self._run_groups(todo, job)

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

    def _extend_packed(self, kv, offset: int, rows: list, stats) -> list:
        """`_extend` with the rows packed into one sequence: each row's
        key/values are `kv`'s followed by its own slice of the packed cache."""
        if not any(rows):
            return [kv] * len(rows)
        try:
            out, layout = self._packed_forward([(kv, offset, rows)])
        except torch.OutOfMemoryError:
            if len(rows) == 1:
                raise GraderError("out of memory computing a shared prompt prefix; use a smaller dtype or a "
                                  "larger device")
            self._free()
            stats.oom_splits += 1
            half = len(rows) // 2
            return (self._extend_packed(kv, offset, rows[:half], stats)
                    + self._extend_packed(kv, offset, rows[half:], stats))
        stats.prefix_tokens += layout.tokens
        stats.batches += 1
        cache = out.get("cache", None) or out.get("past_key_values")
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        base = layout.prefix_total
        kvs = []
        for (_, start, n) in layout.rows:
            if n == 0:
                kvs.append(kv)
            else:  # one copy per conversation (its prefix and its own keys side by side), not per row
                kvs.append(tuple((torch.cat([k[:, :, :base], k[:, :, base + start:base + start + n]], 2),
                                  torch.cat([v[:, :, :base], v[:, :, base + start:base + start + n]], 2))
                                 for k, v in layers))
        return kvs

    def _run_groups(self, groups, job):
        """Grade groups ((kv, offset, rows, slots)): packed, or each in padded batches."""
        if self.packed:
            self._run_packed(groups, job)
        else:
            for kv, offset, rows, slots in groups:
                self._run(rows, slots, kv, offset, job)

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
        job.add(slots, logits)
        stats = job.stats
        stats.batches += 1
        stats.suffix_tokens += sum(len(r) for r in rows)
        stats.padded_tokens += max(len(r) for r in rows) * len(rows)

    def _run_packed(self, groups, job):
        """Every group's rows, in packed forwards of at most `pack_budget` tokens."""
        for pack in plan_packs([[len(r) for r in rows] for _, _, rows, _ in groups], self.pack_budget):
            self._forward_pack([(groups[g][0], groups[g][1], [groups[g][2][r] for r in picked],
                                 [groups[g][3][r] for r in picked]) for g, picked in pack], job)

    def _forward_pack(self, pack, job):
        try:
            logits = self._packed_logits([(kv, offset, rows) for kv, offset, rows, _ in pack])
        except torch.OutOfMemoryError:
            flat = [(kv, offset, row, slot) for kv, offset, rows, slots in pack for row, slot in zip(rows, slots)]
            if len(flat) == 1:
                raise GraderError(f"out of memory grading {job.rows[flat[0][3]].where} even alone; "
                                  "use a smaller dtype or a larger device")
            self._free()
            job.stats.oom_splits += 1
            tokens = sum(len(row) for _, _, row, _ in flat)
            self.pack_budget = max(1, tokens // 2)  # stay smaller for the rest of the run
            half = len(flat) // 2
            self._forward_pack(_regroup(flat[:half]), job)
            self._forward_pack(_regroup(flat[half:]), job)
            return
        job.add([slot for *_, slots in pack for slot in slots], logits)
        tokens = sum(len(r) for _, _, rows, _ in pack for r in rows)
        stats = job.stats
        stats.batches += 1
        stats.suffix_tokens += tokens
        stats.padded_tokens += tokens  # no padding

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
        return self._logits(hidden[torch.arange(b, device=self.device), last])

    def _packed_forward(self, groups) -> tuple:
        """One forward of `groups` ((kv, offset, rows)) packed; (its output, its PackedRows)."""
        from transformers import DynamicCache

        layout = PackedRows.of([offset if kv is not None else 0 for kv, offset, _ in groups],
                               [[len(r) for r in rows] for _, _, rows in groups])
        ids = [t for _, _, rows in groups for r in rows for t in r]
        positions = [offset + i for _, offset, rows in groups for r in rows for i in range(len(r))]
        kvs = [kv for kv, _, _ in groups if kv is not None]
        if not kvs:  # an empty cache still tells transformers the rows continue one (no mask of its own)
            cache = DynamicCache(config=self.model.config)
        elif len(kvs) == 1:
            cache = DynamicCache(ddp_cache_data=list(kvs[0]))
        else:  # one copy of each group's prefix, end to end (the layout says whose is whose)
            cache = DynamicCache(ddp_cache_data=[(torch.cat([kv[layer][0] for kv in kvs], 2),
                                                  torch.cat([kv[layer][1] for kv in kvs], 2))
                                                 for layer in range(len(kvs[0]))])
        out = self._base(input_ids=torch.tensor([ids]).to(self.device, non_blocking=True),
                         position_ids=torch.tensor([positions]).to(self.device, non_blocking=True),
                         **{self._cache_arg: cache}, use_cache=True, rbr_packed=layout)
        return out, layout

    def _packed_logits(self, groups) -> torch.Tensor:
        """Vocabulary logits at each packed row's last token only, `[rows, V]`."""
        out, layout = self._packed_forward(groups)
        return self._logits(out.last_hidden_state[0, layout.ends(self.device)])

    def _logits(self, hidden) -> torch.Tensor:
        logits = self._head(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits


@dataclass
class _Job:
    """One `_score` call in progress: the rows, their answers so far (on the
    device: nothing waits for the device per row or per batch), what it cost."""

    rows: list[Row]
    answers: AnswerTokens
    stats: GradeStats
    parts: list = field(default_factory=list)  # (slots, [3, B] P(yes), mass, 1 where a logit is not finite)

    def add(self, slots: list[int], logits: torch.Tensor) -> None:
        p, m = yes_probability(logits, self.answers)
        bad = (~torch.isfinite(logits).all(dim=-1)).double()
        self.parts.append((slots, torch.stack([p, m, bad])))

    def results(self) -> tuple[torch.Tensor, torch.Tensor]:
        """P(yes) and the answer mass per row (`[R]` float64 each): one copy from the device."""
        p_yes, mass = torch.zeros(len(self.rows), dtype=torch.float64), torch.ones(len(self.rows), dtype=torch.float64)
        if not self.parts:
            return p_yes, mass
        slots = torch.tensor([s for part, _ in self.parts for s in part])
        values = torch.cat([v for _, v in self.parts], 1).cpu()
        bad = values[2].nonzero()
        if len(bad):
            raise GraderError(f"the grader produced NaN or infinite logits for "
                              f"{self.rows[int(slots[int(bad[0])])].where}; no reward is given for it")
        p_yes[slots], mass[slots] = values[0], values[1]
        return p_yes, mass


def _regroup(flat) -> list:
    """(kv, offset, row, slot) per row, back into groups of consecutive rows sharing one prefix."""
    pack = []
    for kv, offset, row, slot in flat:
        if pack and pack[-1][0] is kv and pack[-1][1] == offset:
            pack[-1][2].append(row)
            pack[-1][3].append(slot)
        else:
            pack.append((kv, offset, [row], [slot]))
    return pack


def _plain_attention(config) -> bool:
    """Packed rows see whole prefixes: no sliding windows, no soft-capped scores."""
    types = getattr(config, "layer_types", None) or ()
    return (all(t == "full_attention" for t in types) and not getattr(config, "attn_logit_softcapping", None)
            and not getattr(config, "use_sliding_window", False))


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
