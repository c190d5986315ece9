"""Grading benchmark: the safety policy over gold conversations, four ways in
one run on the same model and the same token ids.

  naive   one full prompt per (item, proposition), one forward each
  padded  full prompts in data order, right-padded batches with an attention
          mask, no prefix reuse, logits at every position
  sorted  what a competent user writes first: all whole prompts sorted by
          length, left-padded batches with an attention mask and position ids,
          vocabulary logits only at the last position (`logits_to_keep=1`)
  ours    HFGrader: shared prefixes forwarded once and their KV cache reused
          (the safety template puts the conversation first, so each item's
          conversation and response are shared by its 23 propositions);
          length-sorted batches under a token budget; logits only at each
          row's last real token

Tokens forwarded per item are compared with the unavoidable minimum: the
number of nodes in a trie of all the prompts' token ids, i.e. every distinct
prefix forwarded exactly once and no padding.

    python bench/grading.py                # small config, N=64, CPU
    python bench/grading.py --n 32 --threads 1 --skip-padded   # RESULTS.md (a shared CPU)
    python bench/grading.py --json         # one JSON object
    python bench/grading.py --config half_b --device cuda --dtype bfloat16 --n 256
    python bench/grading.py --grader PATH/SmolLM2-135M-Instruct.Q4_1.gguf --n 8 --threads 1   # a real judge

`--grader DIR|FILE.gguf` runs a real model (a transformers folder, or a GGUF
file dequantised as it loads) in place of a `--config` preset: the real
judge's shape (SmolLM2-135M: head size 64, GQA 3:1, a 49k vocabulary).

The baselines are plain transformers calls (`model(ids).logits`,
`model(ids, attention_mask=mask).logits`, `model(..., logits_to_keep=1)`,
stock SDPA; tests/support/reference.py). `encode` is the time ours spends
turning the items into token ids (every whole prompt tokenised); it is part
of ours's time.

Reference model configs (random weights, a byte-level BPE tokenizer of at
most 4096 tokens trained on tiny.py's BASE_CORPUS and the policy's templates,
embedding rows padded to the model's vocab; see rbrlang/runtime/tiny.py PRESETS):
  small   Llama, vocab 8192, hidden 256, 4 layers, 8 heads (2 KV), MLP 1024: ~8.0M params,
          the output layer about half the size of the transformer layers, as in
          small real graders (Qwen2.5-0.5B: about 0.4)
  half_b  Llama, vocab 32000, hidden 896, 24 layers, 14 heads (2 KV), MLP 4864: ~0.5B params
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rbrlang.policy import load_policy  # noqa: E402
from rbrlang.runtime import HFGrader  # noqa: E402
from rbrlang.runtime.gguf import is_gguf  # noqa: E402
from tests.support.reference import full_forward, padded_forward, sorted_last_token_forward  # noqa: E402
from rbrlang.runtime.tiny import build_tiny_grader  # noqa: E402

GOLD = ROOT.parent / "shared" / "data" / "openai-rbr" / "gold_train.jsonl"
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, per GPU


def load_items(n: int):
    rows = [json.loads(line) for line in GOLD.read_text().splitlines()][:n]
    return [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]


def trie_size(rows) -> int:
    """Distinct prefixes among token sequences: sorted, each adds what it does
    not share with its predecessor."""
    rows = sorted(rows)
    total, prev = 0, ()
    for r in rows:
        common = 0
        for a, b in zip(prev, r):
            if a != b:
                break
            common += 1
        total += len(r) - common
        prev = r
    return total


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start) -> dict:
    """Wall seconds, and this process's CPU seconds (all threads): on a CPU
    that other jobs share, CPU seconds vary less than wall seconds."""
    wall, cpu = clock()
    return {"seconds": wall - start[0], "cpu_seconds": cpu - start[1]}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="gold conversations (N)")
    ap.add_argument("--config", default="small", help="tiny.py preset")
    ap.add_argument("--grader", metavar="DIR|FILE.gguf", help="a real model instead of a preset")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=8, help="rows per batch for the padded and sorted baselines")
    ap.add_argument("--token-budget", type=int, default=16384)
    ap.add_argument("--skip-naive", action="store_true", help="leave out the one-at-a-time baseline")
    ap.add_argument("--skip-padded", action="store_true", help="leave out the data-order padded baseline")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--padded-ours", action="store_true",
                    help="also run ours with packed=False (right-padded rows), in the same run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(ROOT / "compiled" / "safety")
        templates = sorted({p.template for p in policy.propositions if p.graded})
        if args.grader:
            path = Path(args.grader)
            args.config = path.name
        else:
            path = build_tiny_grader(Path(tmp) / "grader", seed=0, config=args.config, dtype=dtype,
                                     corpus=templates)
        convs, resps = load_items(args.n)
        ours = HFGrader.from_pretrained(str(path), device=args.device, dtype=dtype, token_budget=args.token_budget)
        device = ours.device
        # The baselines run the same weights through stock transformers (SDPA).
        where = ({"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name} if is_gguf(path)
                 else {"pretrained_model_name_or_path": str(path)})
        stock = AutoModelForCausalLM.from_pretrained(**where, dtype=dtype, attn_implementation="sdpa").to(device)
        stock.eval()
        params = sum(p.numel() for p in ours.model.parameters())
        answers = ours.answer_tokens(policy)
        names = policy.proposition_names
        t = time.perf_counter()
        items = ours.encoder.encode_items(policy, convs, resps)
        encode_seconds = time.perf_counter() - t
        encoded = {name: [item[name] for item in items] for name in names}
        full_tokens = sum(len(e.ids) for es in encoded.values() for e in es)
        minimum = trie_size([e.ids for es in encoded.values() for e in es])

        # warm-up, so no method pays for first-call set-up
        full_forward(stock, encoded[names[0]][0].ids, answers)

        results = {}
        if not args.skip_naive:
            sync(device)
            t = clock()
            naive = torch.tensor([[full_forward(stock, encoded[n][i].ids, answers)[0] for n in names]
                                  for i in range(args.n)])
            sync(device)
            results["naive"] = {**since(t), "tokens": full_tokens}

        if not args.skip_padded:
            sync(device)
            t = clock()
            padded = torch.zeros(args.n, len(names), dtype=torch.float64)
            padded_tokens = 0
            for j, n in enumerate(names):
                for s in range(0, args.n, args.batch):
                    rows = [encoded[n][i].ids for i in range(s, min(args.n, s + args.batch))]
                    p, _ = padded_forward(stock, rows, answers, ours.pad_id)
                    padded[s:s + len(rows), j] = p.cpu()
                    padded_tokens += max(len(r) for r in rows) * len(rows)
            sync(device)
            results["padded"] = {**since(t), "tokens": padded_tokens}

        sync(device)
        t = clock()
        flat = [encoded[n][i].ids for i in range(args.n) for n in names]
        p, _, sorted_tokens = sorted_last_token_forward(stock, flat, answers, ours.pad_id, args.batch)
        by_length = p.reshape(args.n, len(names))
        sync(device)
        results["sorted"] = {**since(t), "tokens": sorted_tokens}

        sync(device)
        t = clock()
        grades = ours.grade_detailed(policy, convs, resps)
        sync(device)
        results["ours"] = {**since(t), "tokens": grades.stats.forwarded}

        if args.padded_ours:  # the earlier row path on the same weights, for a before/after in one run
            old = HFGrader.from_pretrained(str(path), device=args.device, dtype=dtype,
                                           token_budget=args.token_budget, packed=False)
            sync(device)
            t = clock()
            padded_grades = old.grade_detailed(policy, convs, resps)
            sync(device)
            results["ours_padded"] = {**since(t), "tokens": padded_grades.stats.forwarded}

    reference = naive if "naive" in results else by_length
    max_diff = float((grades.p_yes.double() - reference.double()).abs().max())
    sorted_diff = float((by_length.double() - reference.double()).abs().max())
    fastest_baseline = min(v["seconds"] for k, v in results.items() if k != "ours")
    out = {
        "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        "config": args.config, "params": params, "dtype": args.dtype, "device": str(device), "n": args.n,
        "propositions": len(names),
        "tokens_per_item": {k: v["tokens"] / args.n for k, v in results.items()},
        "minimum_tokens_per_item": minimum / args.n,
        "seconds": {k: round(v["seconds"], 3) for k, v in results.items()},
        "items_per_second": {k: args.n / v["seconds"] for k, v in results.items()},
        "tokens_ratio": results["ours"]["tokens"] / minimum,
        "speedup": fastest_baseline / results["ours"]["seconds"],
        "speedup_vs": {k: v["seconds"] / results["ours"]["seconds"] for k, v in results.items() if k != "ours"},
        "cpu_seconds": {k: round(v["cpu_seconds"], 3) for k, v in results.items()},
        "cpu_speedup_vs": {k: v["cpu_seconds"] / results["ours"]["cpu_seconds"] for k, v in results.items()
                           if k != "ours"},
        "max_abs_diff_p_yes": max_diff,
        "max_abs_diff_p_yes_sorted": sorted_diff,
        "encode_seconds": round(encode_seconds, 3),
        "layout": grades.stats.layout,
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        flops = 2 * params * results["ours"]["tokens"]  # matmul FLOPs; attention excluded
        out["achieved_tflops"] = flops / results["ours"]["seconds"] / 1e12
        if peak:
            out["roofline_fraction"] = out["achieved_tflops"] / peak

    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['machine']}; config {args.config} ({params / 1e6:.1f}M params, {args.dtype}, {device}); "
              f"N={args.n} × {len(names)} propositions")
        print(f"{'method':8} {'tokens/item':>12} {'× minimum':>10} {'seconds':>9} {'items/s':>9} {'ours is':>9} "
              f"{'CPU s':>9} {'by CPU s':>9}")
        for k, v in results.items():
            ratio = v["tokens"] / minimum
            faster = "" if k == "ours" else f"{v['seconds'] / results['ours']['seconds']:.2f}×"
            by_cpu = "" if k == "ours" else f"{v['cpu_seconds'] / results['ours']['cpu_seconds']:.2f}×"
            print(f"{k:8} {v['tokens'] / args.n:12.0f} {ratio:10.3f} {v['seconds']:9.2f} "
                  f"{args.n / v['seconds']:9.2f} {faster:>9} {v['cpu_seconds']:9.2f} {by_cpu:>9}")
        print(f"minimum  {minimum / args.n:12.0f}")
        print(f"tokens_ratio {out['tokens_ratio']:.3f}  speedup (vs faster baseline) {out['speedup']:.2f}×  "
              f"max |ΔP(yes)| {max_diff:.1e} (sorted baseline {sorted_diff:.1e})  shared per {grades.stats.layout}")
        print(f"encode (whole prompts tokenised, part of ours) {encode_seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
