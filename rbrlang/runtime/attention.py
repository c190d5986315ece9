"""Exact, cheap attention for "causal after a cached prefix".

When a batch's rows continue a cached prefix of P positions, query i (at
position P+i) attends keys 0..P+i: a causal mask aligned to the bottom-right.
SDPA's `is_causal` is aligned to the top-left, so transformers materialises a
boolean mask instead, and SDPA then computes every (query, key) block.

On CPU this module splits the keys instead (`prefix_causal_attention`):
  prefix   every query against keys 0..P-1: no mask at all;
  own      query i against the row's own keys 0..i: top-left causal, so the
           fused kernel skips the blocks above the diagonal;
and merges the two partial softmaxes exactly by their log-sum-exps
(out = w·prefix + (1-w)·own, w = sigmoid(lse_prefix - lse_own)). No padded
query rows, no mask tensor, and the 4-D key/values are read in place (grouped
query heads are not repeated). Elsewhere (CUDA) `causal_lower_right` lets SDPA
pick a kernel that aligns the causal mask bottom-right natively.
bench/attention.py measures these against the alternatives at the grader's
real shapes (bench/RESULTS.md).

It applies only when the mask is purely causal with no padding (right-padded
rows never need one, see hf.py); any other mask goes to stock SDPA.

Packed rows (`PackedRows`, hf.py's default): many rows laid end to end in one
sequence `[1, T]`, each after the cached prefix of its group (an item's
conversation), the groups' prefixes end to end in the cache. Query t of row r
in group g sees all of g's prefix and r's own keys up to t: no padding, one
prefix copy. The layout reaches `_attention` as the forward keyword
`rbr_packed` (transformers hands a model's extra forward keywords to the
attention function, as it does `cu_seq_lens_q` for packed flash attention; a
cache makes it skip its own packed-sequence detection). `packed_attention`
computes it: on CPU float32 with oneDNN products (`_packed_gemm`: per chunk of
rows and key head, the scores against the group's prefix and against the
chunk's own keys with a block-diagonal causal mask, one softmax over both,
two products with the values), else two flash calls per group merged by
log-sum-exp (`_packed_split`); on CUDA `torch.nn.attention.varlen` twice
(prefix per group, own causal per row) merged the same way; elsewhere SDPA
with the layout's explicit mask (`PackedRows.mask`, also the tests' reference).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

NAME = "rbr_prefix_causal"
_registered = False
# SDPA's CPU flash kernel: the only public-by-use entry that also returns each
# row's log-sum-exp (F.scaled_dot_product_attention drops it).
_CPU_FLASH = getattr(getattr(torch.ops, "aten", None), "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _onednn_linear():
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return None


# oneDNN's float32 product (`mkldnn._linear_pointwise`, public by use as torch's
# own fused-linear op): 150-260 GFLOP/s on the AMD CPUs measured, where MKL
# (`torch.mm`) gets 60-105 (bench/RESULTS.md).
_LINEAR = _onednn_linear()
_SCORE_BYTES = 2 << 20  # one chunk's scores in `_packed_gemm`: about an L2 cache
# Which CPU float32 kernel packed rows take: "gemm" (oneDNN products) or "split"
# (flash kernel + log-sum-exp); bench/attention.py measures both (RESULTS.md).
CPU_PACKED_KERNEL = "split"  # measured 1.79x faster than "gemm" at SmolLM2 shapes, one thread (RESULTS.md)


def prefix_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            scale: float | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Attention where query row i sees keys 0..kv-q+i (bottom-right causal).

    `query` `[B, H, q, D]`, `key`/`value` `[B, Hkv, kv, D]` with kv >= q and
    Hkv dividing H (grouped-query heads). Returns `[B, H, q, D]`.
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len == 0:  # (the CPU kernel divides by the row count)
        return query.new_empty(query.shape)
    if kv_len == q_len:  # no prefix: plain (top-left) causal
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, is_causal=True, scale=scale,
                                              enable_gqa=key.shape[1] != query.shape[1])
    if kv_len < q_len:
        raise ValueError(f"{q_len} queries cannot continue {kv_len} keys")
    if query.device.type == "cpu" and _CPU_FLASH is not None and dropout_p == 0.0 and query.dtype in _FLASH_DTYPES:
        return _split(query, key, value, scale)
    return _lower_right(query, key, value, scale, dropout_p)


def _split(query, key, value, scale):
    prefix = key.shape[2] - query.shape[2]  # > 0: the CPU kernel crashes (SIGFPE) on zero keys
    # The CPU kernel takes grouped-query key/values as they are (no repeat).
    out_p, lse_p = _CPU_FLASH(query, key[:, :, :prefix], value[:, :, :prefix], scale=scale)
    out_o, lse_o = _CPU_FLASH(query, key[:, :, prefix:], value[:, :, prefix:], is_causal=True, scale=scale)
    # softmax over both parts = each part's softmax weighted by its share of
    # the total mass exp(lse_p) / (exp(lse_p) + exp(lse_o)); lse is float32.
    weight = torch.sigmoid(lse_p - lse_o).unsqueeze(-1)
    if out_o.dtype == weight.dtype:
        return out_o.lerp_(out_p, weight)
    return out_o.float().lerp_(out_p.float(), weight).to(query.dtype)


def _lower_right(query, key, value, scale, dropout_p):
    from torch.nn.attention.bias import causal_lower_right

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # not every kernel behind CausalBias takes grouped-query heads
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scale,
                                          attn_mask=causal_lower_right(query.shape[2], key.shape[2]))


@dataclass(frozen=True, eq=False)
class PackedRows:
    """The layout of one packed forward (see the module docstring).

    `groups[g]` = (prefix start, prefix length) of group g's keys in the cache;
    `rows[r]` = (group, first query, length): rows end to end in group order,
    T = the sum of their lengths. The cache holds sum(prefix lengths) keys,
    the forward's own T keys follow them. Build with `PackedRows.of`."""

    groups: tuple[tuple[int, int], ...]
    rows: tuple[tuple[int, int, int], ...]
    prefix_total: int
    tokens: int
    _device: dict = field(default_factory=dict, repr=False)  # per device: index tensors, the mask

    @classmethod
    def of(cls, prefixes: Sequence[int], rows: Sequence[Sequence[int]]) -> "PackedRows":
        """`prefixes[g]`: group g's cached prefix length; `rows[g]`: its rows' lengths (0 allowed: no queries)."""
        groups, out, start, at = [], [], 0, 0
        for g, (p, lengths) in enumerate(zip(prefixes, rows, strict=True)):
            groups.append((start, p))
            start += p
            for n in lengths:
                out.append((g, at, n))
                at += n
        return cls(tuple(groups), tuple(out), start, at)

    def group_queries(self) -> list[tuple[int, int, int, int, list[tuple[int, int]]]]:
        """Per group with queries: (prefix start, prefix length, first query, count, its rows' (first, length))."""
        spans: dict[int, list] = {}
        for g, s, n in self.rows:
            if n:
                spans.setdefault(g, []).append((s, n))
        return [(*self.groups[g], r[0][0], sum(n for _, n in r), r) for g, r in spans.items()]

    def ends(self, device) -> torch.Tensor:
        """The packed index of every non-empty row's last query (where its answer is read)."""
        return self._cached(device, "ends", lambda: torch.tensor([s + n - 1 for _, s, n in self.rows if n]))

    def mask(self, device) -> torch.Tensor:
        """`[T, prefix_total + T]` bool, True where a query may look: the explicit form of the layout."""
        def build():
            allowed = torch.zeros(self.tokens, self.prefix_total + self.tokens, dtype=torch.bool)
            own = torch.ones(self.tokens, self.tokens, dtype=torch.bool).tril()
            for g, s, n in self.rows:
                p0, p = self.groups[g]
                allowed[s:s + n, p0:p0 + p] = True
                allowed[s:s + n, self.prefix_total + s:self.prefix_total + s + n] = own[:n, :n]
            return allowed
        return self._cached(device, "mask", build)

    def varlen(self, device) -> dict:
        """cu_seq tensors for `torch.nn.attention.varlen` (rows causal; groups against their prefixes)."""
        def build():
            rows = [n for _, _, n in self.rows if n]
            groups = self.group_queries()
            cum = lambda xs: torch.tensor([0] + xs, dtype=torch.int32).cumsum(0, dtype=torch.int32)  # noqa: E731
            return {"cu_rows": cum(rows), "max_row": max(rows),
                    "cu_gq": cum([c for *_, c, _ in groups]), "max_gq": max(c for *_, c, _ in groups),
                    "cu_gp": cum([p for _, p, *_ in groups]), "max_gp": max(p for _, p, *_ in groups)}
        return self._cached(device, "varlen", build)

    def _cached(self, device, name, build):
        key = (str(device), name)
        if key not in self._device:
            value = build()
            self._device[key] = ({k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                                  for k, v in value.items()} if isinstance(value, dict)
                                 else value.to(device, non_blocking=True))
        return self._device[key]


def packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: PackedRows,
                     scale: float | None = None) -> torch.Tensor:
    """Attention of packed rows: `query` `[1, H, T, D]`, `key`/`value`
    `[1, Hkv, prefix_total + T, D]` (the cached prefixes, then the rows' own
    keys). Returns `[1, H, T, D]`."""
    if query.shape[0] != 1 or query.shape[2] != layout.tokens or key.shape[2] != layout.prefix_total + layout.tokens:
        raise ValueError(f"packed rows: queries {tuple(query.shape)} and keys {tuple(key.shape)} do not fit a layout "
                         f"of {layout.tokens} tokens after {layout.prefix_total} cached")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if query.device.type == "cpu" and not grad:
        if query.dtype == torch.float32 and _LINEAR is not None and CPU_PACKED_KERNEL == "gemm":
            return _packed_gemm(query, key, value, layout, scale)
        if _CPU_FLASH is not None and query.dtype in _FLASH_DTYPES:
            return _packed_split(query, key, value, layout, scale)
    if query.device.type == "cuda" and query.dtype in (torch.float16, torch.bfloat16) and not grad:
        varlen = _packed_varlen(query, key, value, layout, scale)
        if varlen is not None:
            return varlen
    return _packed_masked(query, key, value, layout, scale)


def _packed_masked(query, key, value, layout, scale):
    """SDPA with the layout's explicit mask: any device, any dtype, autograd."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=layout.mask(query.device), scale=scale,
                                          enable_gqa=key.shape[1] != query.shape[1])


def _packed_split(query, key, value, layout, scale):
    """Per group: its queries × its prefix (no mask), each row × its own keys
    (top-left causal), both by the CPU flash kernel, merged by log-sum-exp."""
    out = query.new_empty(query.shape[0], query.shape[2], query.shape[1], query.shape[3])  # [1, T, H, D]
    base = layout.prefix_total
    for p0, p, q0, count, rows in layout.group_queries():
        own_out = out[:, q0:q0 + count].transpose(1, 2)  # the group's slice of `out`, [1, H, count, D]
        lse_o = query.new_empty(1, query.shape[1], count, dtype=torch.float32)
        for s, n in rows:
            o, lse = _CPU_FLASH(query[:, :, s:s + n], key[:, :, base + s:base + s + n],
                                value[:, :, base + s:base + s + n], is_causal=True, scale=scale)
            own_out[:, :, s - q0:s - q0 + n] = o
            lse_o[:, :, s - q0:s - q0 + n] = lse
        if p:  # the kernel cannot take zero keys
            out_p, lse_p = _CPU_FLASH(query[:, :, q0:q0 + count], key[:, :, p0:p0 + p], value[:, :, p0:p0 + p],
                                      scale=scale)
            weight = torch.sigmoid(lse_p - lse_o).unsqueeze(-1)
            own_out.copy_(torch.lerp(own_out.float(), out_p.float(), weight))
    return out.transpose(1, 2)


def _packed_gemm(query, key, value, layout, scale):
    """Per group, chunk of queries and key head: the scores of the key head's
    query heads against the group's prefix and the chunk's own keys (joined:
    the prefix, then the chunk's rows up to its last query) as one oneDNN
    product, an additive mask that keeps each query to its own row's keys at
    or before it, softmax, one product with the values."""
    _, heads, _, d = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    base = layout.prefix_total
    out = query.new_empty(1, query.shape[2], heads, d)  # [1, T, H, D]
    key, value = key[0], value[0]
    for p0, p, _, _, rows in layout.group_queries():
        for c0, c1, k0 in _gemm_chunks(layout, rows, groups, p):
            n, width = c1 - c0, p + c1 - k0
            mask = _chunk_mask(layout, rows, c0, c1, k0, p, query.dtype)  # [n, width]
            q = query[0, :, c0:c1].reshape(kv_heads, groups * n, d) * scale  # [Hkv, G·n, D]
            # oneDNN takes the second operand as a contiguous [N, K] "weight" (else a slow reorder per call):
            # the keys a chunk sees, and the values transposed, are copied once per chunk (small beside its scores).
            keys = torch.cat([key[:, p0:p0 + p], key[:, base + k0:base + c1]], 1)
            values_t = torch.cat([value[:, p0:p0 + p], value[:, base + k0:base + c1]], 1).transpose(1, 2).contiguous()
            for h in range(kv_heads):
                scores = _LINEAR(q[h], keys[h], None, "none", [], "").view(groups, n, width)
                scores += mask
                weights = torch.softmax(scores, -1).view(groups * n, width)
                o = _LINEAR(weights, values_t[h], None, "none", [], "")
                out[0, c0:c1, h * groups:(h + 1) * groups] = o.view(groups, n, d).transpose(0, 1)
    return out.transpose(1, 2)


_MIN_CHUNK_ROWS = 192  # product rows (queries × query heads) below which consecutive short rows share a chunk


def _gemm_chunks(layout, rows, groups, prefix) -> list[tuple[int, int, int]]:
    """(first query, end, first own key) of each chunk of a group's rows: a
    chunk's scores stay about `_SCORE_BYTES`; short rows share one, a long row
    is cut (each part against its row's keys up to its last query)."""
    key = ("chunks", rows[0][0], len(rows), groups, prefix, _SCORE_BYTES)
    if key in layout._device:
        return layout._device[key]
    chunks, current = [], None  # current: [first query, end, first own key]
    for s, n in rows:
        fits = current is not None and groups * (current[1] - current[0]) < _MIN_CHUNK_ROWS and (
            4 * groups * (s + n - current[0]) * (prefix + s + n - current[2]) <= _SCORE_BYTES)
        if fits:
            current[1] = s + n
            continue
        if current is not None:
            chunks.append(tuple(current))
            current = None
        step = max(16, _SCORE_BYTES // (4 * groups * (prefix + n)))
        for a in range(s, s + n, step):
            chunks.append((a, min(s + n, a + step), s))
        last = chunks.pop()
        current = list(last)
    if current is not None:
        chunks.append(tuple(current))
    layout._device[key] = chunks
    return chunks


def _chunk_mask(layout, rows, c0, c1, k0, prefix, dtype) -> torch.Tensor:
    """`[c1 - c0, prefix + c1 - k0]` additive: 0 on the prefix and on a query's
    own row at or before it, -inf elsewhere (kept with the layout: every layer asks)."""
    key = ("mask", c0, c1, k0, prefix, dtype)
    if key not in layout._device:
        row_of = torch.empty(c1 - k0, dtype=torch.long)
        for r, (s, n) in enumerate(rows):
            lo, hi = max(s, k0), min(s + n, c1)
            if lo < hi:
                row_of[lo - k0:hi - k0] = r
        q_pos, k_pos = torch.arange(c0, c1)[:, None], torch.arange(k0, c1)[None]
        own = (row_of[c0 - k0:][:, None] == row_of[None]) & (k_pos <= q_pos)
        mask = torch.zeros(c1 - c0, prefix + c1 - k0, dtype=dtype)
        mask[:, prefix:].masked_fill_(~own, float("-inf"))
        layout._device[key] = mask
    return layout._device[key]


def _packed_varlen(query, key, value, layout, scale):
    """CUDA only (not run on this project's CPU machines): `torch.nn.attention.varlen`
    for the rows (causal, each its own sequence) and for each group's queries
    against its prefix, merged by log-sum-exp; None where it is not available."""
    try:
        from torch.nn.attention.varlen import AuxRequest, varlen_attn
    except ImportError:
        return None
    cu = layout.varlen(query.device)
    base = layout.prefix_total
    q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)  # [T, H, D]
    gqa = key.shape[1] != query.shape[1]
    out, lse_o = varlen_attn(q, k[base:], v[base:], cu["cu_rows"], cu["cu_rows"], cu["max_row"], cu["max_row"],
                             return_aux=AuxRequest(lse=True), scale=scale, window_size=(-1, 0), enable_gqa=gqa)
    if base:
        if any(p == 0 for _, p, *_ in layout.group_queries()):  # a zero-length key sequence: not every kernel takes one
            return None
        out_p, lse_p = varlen_attn(q, k[:base], v[:base], cu["cu_gq"], cu["cu_gp"], cu["max_gq"], cu["max_gp"],
                                   return_aux=AuxRequest(lse=True), scale=scale, enable_gqa=gqa)
        weight = torch.sigmoid(lse_p.float() - lse_o.float()).unsqueeze(-1)
        out = torch.lerp(out.float(), out_p.float(), weight).to(query.dtype)
    return out.transpose(0, 1).unsqueeze(0)  # [1, H, T, D]


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
               rbr_packed=None, **kwargs):
    if rbr_packed is not None:  # packed rows: the layout says everything the mask would
        return packed_attention(query, key, value, rbr_packed, scale=scaling).transpose(1, 2), None
    if attention_mask is not None or getattr(module, "is_causal", True) is False or is_causal is False:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = prefix_causal_attention(query, key, value, scale=scaling, dropout_p=dropout)
    return out.transpose(1, 2).contiguous(), None


def _mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
          **kwargs):
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    plain = mask_function is None or mask_function is causal_mask_function
    if plain and kv_offset == 0 and (attention_mask is None or bool(attention_mask.all())):
        return None  # purely causal: `_attention` handles it, fused
    # A materialised mask tells `_attention` to take the stock path.
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     mask_function=mask_function or causal_mask_function, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Make the implementation known to transformers (once) and return its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, _attention)
        AttentionMaskInterface.register(NAME, _mask)
        _registered = True
    return NAME


def use_fused_prefix_attention(model) -> bool:
    """Switch a model from stock SDPA to this path; other kernels (flash
    attention handles bottom-right causal itself) are left alone."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    name = register()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # pragma: no cover - older transformers
        model.config._attn_implementation = name
    return model.config._attn_implementation == name
