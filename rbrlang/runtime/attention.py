"""Exact, cheap attention for "causal after a cached prefix".

When a batch's rows continue a cached prefix of P positions, query i (at
position P+i) attends keys 0..P+i: a causal mask aligned to the bottom-right.
SDPA's `is_causal` is aligned to the top-left, so transformers materialises a
boolean mask instead, and SDPA then computes every (query, key) block; the
path this module replaced front-padded the queries to the key length instead,
and computed the padded rows too. `prefix_causal_attention` computes neither,
and picks by device and dtype (bench/attention.py measures every choice at the
grader's real shapes; bench/RESULTS.md has the figures):

  CPU, float32   `_gemm`: per row and key head, the scores of the key head's
                 query heads against the keys they may see, as one matrix
                 product (oneDNN, through torch's `mkldnn._linear_pointwise`:
                 on the AMD CPUs measured it multiplies float32 2-4x faster
                 than MKL, which torch's own matmul uses), a mask only on the
                 row's own diagonal block, softmax, one product with the
                 values. Rows go in chunks, each against only the keys up to
                 its last row, so little above the diagonal is computed and
                 the scores stay in cache.
  CPU, other     `_split`: SDPA's CPU flash kernel twice, queries × prefix keys
                 without a mask and queries × own keys top-left causal, merged
                 exactly by their log-sum-exps (w = sigmoid(lse_p - lse_own)).
  elsewhere      SDPA with `causal_lower_right`, which CUDA kernels align
                 bottom-right natively.

All read grouped-query key/values as they are (no repeat per query head). It
applies only when the mask is purely causal with no padding (right-padded rows
never need one, see hf.py); any other mask goes to stock SDPA.
"""
from __future__ import annotations

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


_LINEAR = _onednn_linear()
_SCORE_BYTES = 2 << 20  # one chunk's scores: about an L2 cache


def prefix_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            scale: float | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Attention where query row i sees keys 0..kv-q+i (bottom-right causal).

    `query` `[B, H, q, D]`, `key`/`value` `[B, Hkv, kv, D]` with kv >= q and
    Hkv dividing H (grouped-query heads). Returns `[B, H, q, D]`.
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len == 0:  # nothing to compute (and no kernel is asked to: empty inputs can crash them)
        return query.new_empty(query.shape)
    if kv_len < q_len:
        raise ValueError(f"{q_len} queries cannot continue {kv_len} keys")
    gqa = key.shape[1] != query.shape[1]
    # Neither oneDNN's op nor the flash kernel's log-sum-exp has a backward:
    # under autograd the stock kernels below run.
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    # Without a prefix the stock fused causal kernel is fastest (measured: the
    # product path took 2.6x its time on a 1500-token self-attention).
    if query.device.type == "cpu" and dropout_p == 0.0 and not grad and kv_len > q_len:
        if query.dtype == torch.float32 and _LINEAR is not None:
            return _gemm(query, key, value, scale)
        if _CPU_FLASH is not None and query.dtype in _FLASH_DTYPES:
            return _split(query, key, value, scale)
    if kv_len == q_len:  # no prefix: plain (top-left) causal
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, is_causal=True, scale=scale,
                                              enable_gqa=gqa)
    return _lower_right(query, key, value, scale, dropout_p)


def _gemm(query, key, value, scale):
    b, heads, q_len, d = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    groups, prefix = heads // kv_heads, kv_len - q_len
    scaled = torch.empty(b, heads, q_len, d, dtype=query.dtype)
    torch.mul(query, d ** -0.5 if scale is None else scale, out=scaled)
    scaled = scaled.view(b, kv_heads, groups, q_len, d)
    # oneDNN takes the second operand as a contiguous [N, K] "weight"; any
    # other layout costs it a slow reorder per call.
    key = key.contiguous()
    value_t = value.transpose(2, 3).contiguous()  # [B, Hkv, D, kv]
    rows = max(16, min(q_len, _SCORE_BYTES // (4 * groups * kv_len)))
    above = torch.full((rows, rows), float("-inf"), dtype=query.dtype).triu_(1)
    out = torch.empty(b, q_len, heads, d, dtype=query.dtype)
    for start in range(0, q_len, rows):
        stop = min(q_len, start + rows)
        n, width = stop - start, prefix + stop  # these rows see keys 0..width-1 at most
        for r in range(b):
            for h in range(kv_heads):
                q = scaled[r, h, :, start:stop].reshape(groups * n, d)
                scores = _LINEAR(q, key[r, h, :width], None, "none", [], "").view(groups, n, width)
                scores[:, :, prefix + start:] += above[:n, :n]
                weights = torch.softmax(scores, -1).view(groups * n, width)
                v = value_t[r, h] if width == kv_len else value_t[r, h, :, :width].contiguous()
                o = _LINEAR(weights, v, None, "none", [], "")
                out[r, start:stop, h * groups:(h + 1) * groups] = o.view(groups, n, d).transpose(0, 1)
    return out.transpose(1, 2)


def _split(query, key, value, scale):
    prefix = key.shape[2] - query.shape[2]  # > 0: the CPU kernel crashes (SIGFPE) on zero keys
    out_p, lse_p = _CPU_FLASH(query, key[:, :, :prefix], value[:, :, :prefix], scale=scale)
    out_o, lse_o = _CPU_FLASH(query, key[:, :, prefix:], value[:, :, prefix:], is_causal=True, scale=scale)
    # softmax over both parts = each part's softmax weighted by its share of
    # the total mass exp(lse_p) / (exp(lse_p) + exp(lse_o)); lse is float32.
    weight = torch.sigmoid(lse_p - lse_o).unsqueeze(-1)
    if out_o.dtype == weight.dtype:
        return torch.lerp(out_o, out_p, weight)
    return torch.lerp(out_o.float(), out_p.float(), weight).to(query.dtype)


def _lower_right(query, key, value, scale, dropout_p):
    from torch.nn.attention.bias import causal_lower_right

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # not every kernel behind CausalBias takes grouped-query heads
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scale,
                                          attn_mask=causal_lower_right(query.shape[2], key.shape[2]))


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
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
