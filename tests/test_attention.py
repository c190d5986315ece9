"""Prefix-causal attention (rbrlang/runtime/attention.py) against stock SDPA
with an explicit float mask: the same numbers, for every path it takes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rbrlang.runtime import attention
from rbrlang.runtime.attention import prefix_causal_attention


def reference(query, key, value, scale=None):
    """Stock SDPA, keys repeated per query head, an explicit bottom-right
    causal float mask (0 where a query may look, -inf elsewhere)."""
    q_len, kv_len = query.shape[2], key.shape[2]
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    allowed = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    mask = torch.zeros(q_len, kv_len, dtype=query.dtype).masked_fill(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)


def inputs(b, heads, kv_heads, q_len, prefix, d=32, dtype=torch.float32, seed=0):
    """Queries laid out as a model's projections leave them ([B, q, H, D]
    viewed as [B, H, q, D]); keys [B, Hkv, P+q, D] as a KV cache holds them."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, q_len, heads, d, generator=g).transpose(1, 2)
    key = torch.randn(b, kv_heads, prefix + q_len, d, generator=g) * 2  # larger logits: a peaky softmax
    value = torch.randn(b, kv_heads, prefix + q_len, d, generator=g)
    return query.to(dtype), key.to(dtype), value.to(dtype)


SHAPES = [  # (batch, heads, kv heads, queries, prefix)
    (3, 8, 2, 37, 150),   # grouped-query heads, as the `small` preset
    (2, 4, 4, 64, 600),   # one key head per query head
    (4, 8, 2, 1, 90),     # one new token (decoding)
    (1, 8, 1, 300, 5),    # long rows after a short prefix
    (2, 8, 2, 50, 0),     # no prefix: plain causal
]


@pytest.mark.parametrize("shape", SHAPES)
def test_prefix_causal_matches_stock_sdpa_fp32(shape):
    q, k, v = inputs(*shape)
    out = prefix_causal_attention(q, k, v)
    assert out.shape == q.shape
    torch.testing.assert_close(out, reference(q, k, v), atol=1e-5, rtol=0)
    scale = 0.07
    torch.testing.assert_close(prefix_causal_attention(q, k, v, scale=scale), reference(q, k, v, scale=scale),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prefix_causal_half_precision(dtype):
    q, k, v = inputs(3, 8, 2, 40, 200, dtype=dtype)
    out = prefix_causal_attention(q, k, v)
    assert out.dtype == dtype
    exact = reference(q.double(), k.double(), v.double())
    # Within what the half type's rounding allows, and as close as stock SDPA in that type.
    err, stock_err = (out.double() - exact).abs().max(), (reference(q, k, v).double() - exact).abs().max()
    assert err < 2e-2 and err <= 2 * stock_err + 1e-3


def test_lower_right_path_matches_stock_sdpa():
    """The path other devices take (SDPA with `causal_lower_right`), run here on CPU."""
    for shape in SHAPES[:4]:
        q, k, v = inputs(*shape)
        torch.testing.assert_close(attention._lower_right(q, k, v, None, 0.0), reference(q, k, v), atol=1e-5, rtol=0)


def test_without_the_cpu_kernel_falls_back_exactly(monkeypatch):
    monkeypatch.setattr(attention, "_CPU_FLASH", None)
    q, k, v = inputs(*SHAPES[0])
    torch.testing.assert_close(prefix_causal_attention(q, k, v), reference(q, k, v), atol=1e-5, rtol=0)


def test_prefix_is_what_the_rows_see():
    """A query sees the whole prefix and its own row up to itself, nothing after."""
    q, k, v = inputs(2, 4, 2, 10, 20)
    out = prefix_causal_attention(q, k, v)
    v2 = v.clone()
    v2[:, :, 25:] += 100.0  # keys after row position 5
    changed = (prefix_causal_attention(q, k, v2) - out).abs().amax(dim=(0, 1, 3))
    assert bool((changed[:5] == 0).all()) and bool((changed[5:] > 1).all())
    v3 = v.clone()
    v3[:, :, :20] += 100.0  # the prefix: every query sees it
    assert bool(((prefix_causal_attention(q, k, v3) - out).abs().amax(dim=(0, 1, 3)) > 1).all())


def test_no_queries_gives_an_empty_result():
    q, k, v = inputs(2, 8, 2, 0, 12)  # (the CPU kernel would crash on an empty side)
    assert prefix_causal_attention(q, k, v).shape == (2, 8, 0, 32)


def test_more_queries_than_keys_is_an_error():
    q, k, v = inputs(1, 4, 2, 10, 0)
    with pytest.raises(ValueError, match="cannot continue"):
        prefix_causal_attention(q, k[:, :, :5], v[:, :, :5])


def test_model_rows_continuing_a_shared_cache(tmp_path):
    """Through transformers: a batch of rows on a shared prefix cache equals
    each whole prompt forwarded by a stock SDPA model, and a padding mask
    goes to stock SDPA."""
    import inspect

    from transformers import AutoModelForCausalLM, DynamicCache

    from rbrlang.runtime.attention import NAME, use_fused_prefix_attention
    from rbrlang.runtime.tiny import build_tiny_grader

    path = build_tiny_grader(tmp_path / "g", seed=1)
    stock = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    ours = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    assert use_fused_prefix_attention(ours) and ours.config._attn_implementation == NAME
    g = torch.Generator().manual_seed(0)
    prefix, rows = torch.randint(10, 500, (1, 70), generator=g), torch.randint(10, 500, (3, 25), generator=g)
    with torch.no_grad():
        want = stock(torch.cat([prefix.expand(3, -1), rows], 1)).logits[:, -1]
        out = ours.model(prefix, use_cache=True)
        cache = out.get("cache", None) or out.get("past_key_values")  # renamed in transformers 5.2x
        kv = [(layer.keys.expand(3, -1, -1, -1), layer.values.expand(3, -1, -1, -1)) for layer in cache.layers]
        arg = "cache" if "cache" in inspect.signature(ours.model.forward).parameters else "past_key_values"
        hidden = ours.model(input_ids=rows, **{arg: DynamicCache(ddp_cache_data=kv)},
                            position_ids=torch.arange(70, 95)[None].expand(3, -1)).last_hidden_state
        torch.testing.assert_close(ours.lm_head(hidden[:, -1]), want, atol=1e-5, rtol=0)
        pad = torch.zeros(1, 6, dtype=torch.long)
        mask = torch.cat([torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 95, dtype=torch.long)], 1)
        whole = torch.cat([prefix, rows[:1]], 1)
        left = ours(torch.cat([pad, whole], 1), attention_mask=mask).logits[0, -1]
        torch.testing.assert_close(left, want[0], atol=1e-5, rtol=0)
