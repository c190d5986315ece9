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
