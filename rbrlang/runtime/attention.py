"""A fused attention path for "causal after a cached prefix".

When a batch's rows continue a shared cached prefix of length P, each query at
position P+i attends keys 0..P+i: a causal mask aligned to the bottom-right.
Stock SDPA has a fused kernel only for the top-left causal case, so
transformers materialises a float mask and falls back to the slow unfused
path. Here the queries are front-padded to the key length, the fused causal
kernel runs, and the padded rows are dropped: exact, and fused. It applies only
when the mask is purely causal with no padding (right-padded rows never need
one); anything else goes to the stock SDPA path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "rbr_prefix_causal"
_registered = False


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if attention_mask is not None or getattr(module, "is_causal", True) is False:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    b, h, q_len, d = query.shape
    kv_len = key.shape[2]
    if kv_len > q_len:
        query = torch.cat([query.new_zeros(b, h, kv_len - q_len, d), query], dim=2)
    out = F.scaled_dot_product_attention(query, key, value, is_causal=q_len > 1 or kv_len == q_len,
                                         scale=scaling)
    return out[:, :, kv_len - q_len:].transpose(1, 2).contiguous(), None


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
