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
import os
import platform
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flops import Shape, computed_flops, trie_work, useful_flops  # noqa: E402
from measure import (add_variant_options, machine_change, machine_state, parse_variants, ratio_summary,  # noqa: E402
                     round_order, summary, timed)

from rbrlang.policy import load_policy  # noqa: E402
from rbrlang.runtime import HFGrader  # noqa: E402
from rbrlang.runtime.gguf import is_gguf  # noqa: E402
from tests.support.reference import full_forward, padded_forward, sorted_last_token_forward  # noqa: E402
from rbrlang.runtime.tiny import build_tiny_grader  # noqa: E402

GOLD_ENV = "RBRLANG_GOLD"  # the gold file elsewhere (a GPU machine gets no ../shared: bench/gpu.py --gold)
GOLD = Path(os.environ.get(GOLD_ENV) or ROOT.parent / "shared" / "data" / "openai-rbr" / "gold_train.jsonl")
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, per GPU


def load_items(n: int):
    if not GOLD.is_file():
        raise SystemExit(f"no gold items at {GOLD}: set ${GOLD_ENV} to a gold_train.jsonl")
    rows = [json.loads(line) for line in GOLD.read_text().splitlines()][:n]
    return [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]


def grader_path(args, tmp: Path, dtype, policy) -> Path:
    """`--grader DIR|FILE.gguf` as it is (and `args.config` its name), else the
    `--config` preset built from a config into `tmp` (random weights, a
    tokenizer trained on the policy's templates)."""
    if args.grader:
        path = Path(args.grader)
        if not path.exists():
            raise SystemExit(f"--grader {path}: no such folder or file")
        args.config = path.name
        return path
    templates = sorted({p.template for p in policy.propositions if p.graded})
    return build_tiny_grader(tmp / "grader", seed=0, config=args.config, dtype=dtype, corpus=templates)


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
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout (and no table)")
    ap.add_argument("--out", metavar="FILE", help="also write the JSON object to FILE")
    add_variant_options(ap)
    args = ap.parse_args()
    variants = parse_variants(args.variant, [f"token_budget={args.token_budget}", *args.ours])
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    start_state = machine_state()

    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(ROOT / "compiled" / "safety")
        path = grader_path(args, Path(tmp), dtype, policy)
        convs, resps = load_items(args.n)
        ours = {name: HFGrader.from_pretrained(str(path), device=args.device, dtype=dtype, **options)
                for name, options in variants}
        first = next(iter(ours.values()))
        device = first.device
        cuda = device.type == "cuda"
        # The baselines run the same weights through stock transformers (SDPA).
        where = ({"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name} if is_gguf(path)
                 else {"pretrained_model_name_or_path": str(path)})
        stock = AutoModelForCausalLM.from_pretrained(**where, dtype=dtype, attn_implementation="sdpa").to(device)
        stock.eval()
        params = sum(p.numel() for p in first.model.parameters())
        shape = Shape.of(first.model.config)
        answers = first.answer_tokens(policy)
        names = policy.proposition_names
        items = first.encoder.encode_items(policy, convs, resps)
        encoded = {name: [item[name] for item in items] for name in names}
        full_tokens = sum(len(e.ids) for es in encoded.values() for e in es)
        work = trie_work([e.ids for es in encoded.values() for e in es])

        # warm-up, so no method pays for first-call set-up (ours: its shared head, kept across calls)
        full_forward(stock, encoded[names[0]][0].ids, answers)
        for g in ours.values():
            g.grade_detailed(policy, convs[:1], resps[:1])

        def naive():
            return torch.tensor([[full_forward(stock, encoded[n][i].ids, answers)[0] for n in names]
                                 for i in range(args.n)]), full_tokens

        def padded():
            out = torch.zeros(args.n, len(names), dtype=torch.float64)
            tokens = 0
            for j, n in enumerate(names):
                for s in range(0, args.n, args.batch):
                    rows = [encoded[n][i].ids for i in range(s, min(args.n, s + args.batch))]
                    p, _ = padded_forward(stock, rows, answers, first.pad_id)
                    out[s:s + len(rows), j] = p.cpu()
                    tokens += max(len(r) for r in rows) * len(rows)
            return out, tokens

        def by_length():
            flat = [encoded[n][i].ids for i in range(args.n) for n in names]
            p, _, tokens = sorted_last_token_forward(stock, flat, answers, first.pad_id, args.batch)
            return p.reshape(args.n, len(names)), tokens

        def graded(g):
            grades = g.grade_detailed(policy, convs, resps)
            return grades.p_yes, grades.stats.forwarded, grades.stats.layout

        def encode():
            first.encoder.encode_items(policy, convs, resps)
            return None, 0

        runners = {**({} if args.skip_naive else {"naive": naive}), **({} if args.skip_padded else {"padded": padded}),
                   "sorted": by_length, **{k: (lambda g=g: graded(g)) for k, g in ours.items()}, "encode": encode}
        timings = {k: [] for k in runners}
        tokens, p_yes, layout = {}, {}, {}
        with torch.no_grad():
            for r in range(args.rounds):
                for name in round_order(list(runners), r):
                    result, timing = timed(runners[name], cuda=cuda)
                    timings[name].append(timing)
                    if name != "encode":
                        p_yes.setdefault(name, result[0])
                        tokens.setdefault(name, []).append(result[1])
                        if len(result) > 2:
                            layout[name] = result[2]
    end_state = machine_state()

    reference = p_yes["naive"] if "naive" in p_yes else p_yes["sorted"]
    diffs = {k: float((v.double() - reference.double()).abs().max()) for k, v in p_yes.items()}
    seconds = {k: [t.seconds for t in v] for k, v in timings.items()}
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    methods = {}
    for k, ts in timings.items():
        entry = {"seconds": summary(seconds[k]), "cpu_seconds": summary([t.cpu_seconds for t in ts])}
        if cuda:
            entry["cuda_event_seconds"] = summary([t.gpu_seconds for t in ts])
        if k in tokens:
            count = tokens[k][0]
            entry.update(tokens_per_item=count / args.n, tokens_vs_minimum=round(count / work.tokens, 4),
                         tokens_every_round_equal=len(set(tokens[k])) == 1,
                         useful_gflops=round(useful_flops(shape, work) / medians[k] / 1e9, 2),
                         computed_gflops=round(computed_flops(shape, count, work) / medians[k] / 1e9, 2),
                         items_per_second=round(args.n / medians[k], 3), max_abs_diff_p_yes=diffs[k])
        methods[k] = entry
    baselines = [k for k in ("naive", "padded", "sorted") if k in runners]
    fastest = min(baselines, key=lambda k: medians[k])
    out = {
        "benchmark": "grading",
        "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name()}" if cuda else ""),
        "config": args.config, "params": params, "dtype": args.dtype, "device": str(device), "n": args.n,
        "propositions": len(names), "rounds": args.rounds, "variants": dict(variants),
        "minimum_tokens_per_item": work.tokens / args.n, "useful_gflop": round(useful_flops(shape, work) / 1e9, 3),
        "methods": methods,
        # the median of per-round ratios, each variant of ours over each baseline (below 1: ours is faster)
        "ratios_ours_over": {f"{o}/{b}": ratio_summary(seconds[o], seconds[b]) for o in ours for b in baselines},
        "tokens_ratio": {o: methods[o]["tokens_vs_minimum"] for o in ours},
        "speedup": {o: round(medians[fastest] / medians[o], 3) for o in ours},  # vs the fastest baseline, medians
        "layout": layout,
        "machine_load": machine_change(start_state, end_state),
    }
    if cuda:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        for o in ours:
            event = statistics.median(t.gpu_seconds for t in timings[o])
            tflops = computed_flops(shape, tokens[o][0], work) / event / 1e12
            methods[o]["achieved_tflops"] = round(tflops, 2)
            if peak:
                methods[o]["roofline_fraction"] = round(tflops / peak, 4)

    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.json:
        print(json.dumps(out))
        return 0
    print(report(out))
    return 0


def report(out: dict) -> str:
    """The JSON object as a table (also bench/gpu.py's summary)."""
    load, n = out["machine_load"], out["n"]
    lines = [f"{out['machine']}; config {out['config']} ({out['params'] / 1e6:.1f}M params, {out['dtype']}, "
             f"{out['device']}); N={n} × {out['propositions']} propositions; {out['rounds']} rounds; load average "
             f"{load['load_average_before']} → {load['load_average_after']}, steal {load['steal_fraction']}",
             f"{'method':10} {'tokens/item':>12} {'× minimum':>10} {'median s':>9} {'min s':>8} {'spread':>7} "
             f"{'items/s':>9} {'CPU s':>8} {'useful GF/s':>11} {'max |ΔP|':>9}"]
    for k, e in out["methods"].items():
        s = e["seconds"]
        if k == "encode":
            lines.append(f"{k:10} {'':>12} {'':>10} {s['median']:9.3f} {s['min']:8.3f} {s['spread']:7.1%} {'':>9} "
                         f"{e['cpu_seconds']['median']:8.2f}   (prompt encoding alone; part of ours)")
            continue
        lines.append(f"{k:10} {e['tokens_per_item']:12.0f} {e['tokens_vs_minimum']:10.3f} {s['median']:9.3f} "
                     f"{s['min']:8.3f} {s['spread']:7.1%} {e['items_per_second']:9.2f} "
                     f"{e['cpu_seconds']['median']:8.2f} {e['useful_gflops']:11.2f} {e['max_abs_diff_p_yes']:9.1e}"
                     + (f"  CUDA events {e['cuda_event_seconds']['median']:.3f} s" if "cuda_event_seconds" in e
                        else "")
                     + (f", {e['achieved_tflops']} TFLOP/s ({e.get('roofline_fraction', '?')} of peak)"
                        if "achieved_tflops" in e else ""))
    lines.append(f"minimum    {out['minimum_tokens_per_item']:12.0f}")
    for pair, r in out["ratios_ours_over"].items():
        lines.append(f"{pair:20} median of per-round ratios {r['median']:.3f} (min {r['min']:.3f}, max {r['max']:.3f})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
