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


# --- packed rows (PackedRows): rows end to end after their groups' cached prefixes ----------

PACKS = [  # (prefix length per group, row lengths per group)
    ([40], [[7, 3, 12, 1, 9]]),               # one item's rows, one-token row among them
    ([25, 0, 13], [[5, 5], [4, 6, 1], [8]]),  # several groups, one without a cached prefix
    ([30, 18], [[0, 6, 0], [3]]),             # empty rows (no queries: the prefix's own key/values)
    ([0], [[11, 2]]),                         # no prefix at all
    ([60], [[10, 10, 10]]),                   # identical row lengths
]


def packed_inputs(prefixes, rows, heads=8, kv_heads=2, d=32, dtype=torch.float32, seed=0):
    layout = attention.PackedRows.of(prefixes, rows)
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(1, layout.tokens, heads, d, generator=g).transpose(1, 2)
    key = torch.randn(1, kv_heads, layout.prefix_total + layout.tokens, d, generator=g) * 2
    value = torch.randn(1, kv_heads, layout.prefix_total + layout.tokens, d, generator=g)
    return layout, query.to(dtype), key.to(dtype), value.to(dtype)


def packed_reference(layout, query, key, value, scale=None):
    """Float64 softmax over exactly the keys each query may see, written out."""
    groups = query.shape[1] // key.shape[1]
    q, k, v = query.double(), key.double().repeat_interleave(groups, 1), value.double().repeat_interleave(groups, 1)
    scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    allowed = torch.zeros(layout.tokens, layout.prefix_total + layout.tokens, dtype=torch.bool)
    for g, s, n in layout.rows:
        p0, p = layout.groups[g]
        for i in range(n):
            allowed[s + i, p0:p0 + p] = True
            allowed[s + i, layout.prefix_total + s:layout.prefix_total + s + i + 1] = True
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v


@pytest.fixture(params=["gemm", "gemm_chunked", "split", "masked"])
def packed_path(request, monkeypatch):
    """Every way `packed_attention` computes on CPU: oneDNN products (whole
    groups, or one row per chunk), flash calls merged by log-sum-exp, SDPA
    with the layout's mask (what a device without a kernel of its own takes)."""
    if request.param.startswith("gemm") and attention._LINEAR is None:
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setattr(attention, "CPU_PACKED_KERNEL", "gemm" if request.param.startswith("gemm") else "split")
    if request.param == "gemm_chunked":
        monkeypatch.setattr(attention, "_SCORE_BYTES", 1)  # every row its own chunk
    if request.param == "masked":
        monkeypatch.setattr(attention, "_CPU_FLASH", None)
        monkeypatch.setattr(attention, "_LINEAR", None)
    return request.param


@pytest.mark.parametrize("pack", PACKS)
def test_packed_rows_match_the_written_out_softmax(pack, packed_path):
    layout, q, k, v = packed_inputs(*pack)
    for scale in (None, 0.07):
        out = attention.packed_attention(q, k, v, layout, scale=scale)
        assert out.shape == q.shape and out.dtype == q.dtype
        torch.testing.assert_close(out.double(), packed_reference(layout, q, k, v, scale), atol=1e-5, rtol=0)


def test_packed_rows_see_their_prefix_and_themselves_only(packed_path):
    layout, q, k, v = packed_inputs([20, 15], [[6, 4], [5]])
    out = attention.packed_attention(q, k, v, layout)
    base = layout.prefix_total
    for where, changed_rows in ((slice(0, 20), range(0, 10)),         # group 0's prefix: its two rows
                                (slice(20, 35), range(10, 15)),       # group 1's prefix: its row
                                (slice(base + 6, base + 8), range(6, 10))):  # row 1's first keys: itself only
        v2 = v.clone()
        v2[:, :, where] += 100.0
        moved = (attention.packed_attention(q, k, v2, layout) - out).abs().amax(dim=(0, 1, 3))
        assert set(torch.nonzero(moved > 1).flatten().tolist()) == set(changed_rows)


def test_packed_half_precision_split():
    layout, q, k, v = packed_inputs([50, 20], [[9, 4], [7]], dtype=torch.bfloat16)
    out = attention.packed_attention(q, k, v, layout)
    assert out.dtype == torch.bfloat16
    assert (out.double() - packed_reference(layout, q, k, v)).abs().max() < 3e-2


def test_packed_layout_must_fit_the_tensors():
    layout, q, k, v = packed_inputs([10], [[4, 4]])
    with pytest.raises(ValueError, match="do not fit a layout"):
        attention.packed_attention(q, k[:, :, 1:], v[:, :, 1:], layout)
