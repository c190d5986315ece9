"""Item 5 of issue 15, measured: `torch.compile` (inductor, dynamic shapes) of
each decoder layer's MLP and RMSNorms, which fuses SiLU·mul and the norm's
pow/mean/rsqrt/mul chain, against the stock layers, in one process on the
same ids. Reports the first call (the compile; cold or warm on-disk cache,
per $TORCHINDUCTOR_CACHE_DIR), then interleaved rounds of grading N items
(wall and CPU seconds; every grader's prefix cache cleared each round), and
the largest P(yes) difference. Not used by the runtime (bench/RESULTS.md says
why).

    TORCHINDUCTOR_CACHE_DIR=/tmp/inductor python bench/compile_layers.py --n 4            # cold
    TORCHINDUCTOR_CACHE_DIR=/tmp/inductor python bench/compile_layers.py --n 4            # warm
    python bench/compile_layers.py --grader PATH/smollm2-135m-instruct --n 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rbrlang.policy import load_policy  # noqa: E402
from rbrlang.runtime import HFGrader  # noqa: E402
from rbrlang.runtime.tiny import build_tiny_grader  # noqa: E402

GOLD = ROOT.parent / "shared" / "data" / "openai-rbr" / "gold_train.jsonl"


def clock():
    return time.perf_counter(), time.process_time()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--config", default="small")
    ap.add_argument("--grader", metavar="DIR")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    policy = load_policy(ROOT / "compiled" / "safety")
    rows = [json.loads(line) for line in GOLD.read_text().splitlines()][:args.n + 1]
    convs, resps = [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]
    path = args.grader or build_tiny_grader(Path(tempfile.mkdtemp()) / "g", seed=0, config=args.config, corpus=sorted(
        {p.template for p in policy.propositions if p.graded}))
    stock = HFGrader.from_pretrained(str(path), device="cpu", dtype="float32")
    fused = HFGrader.from_pretrained(str(path), device="cpu", dtype="float32")
    for layer in fused.model.base_model.layers:
        for module in (layer.mlp, layer.input_layernorm, layer.post_attention_layernorm):
            module.compile(dynamic=True)
    load = [os.getloadavg()[0]]
    stock.grade(policy, convs[-1:], resps[-1:])  # the held-out last item warms both
    start = clock()
    fused.grade(policy, convs[-1:], resps[-1:])
    first = [b - a for a, b in zip(start, clock())]
    print(f"first call (compiles): {first[0]:.1f} s wall, {first[1]:.1f} s CPU", flush=True)
    seconds = {"stock": [], "compiled": []}
    for r in range(args.rounds):
        order = (("stock", stock), ("compiled", fused))
        for name, g in (order if r % 2 == 0 else order[::-1]):
            g._kv.clear()
            start = clock()
            g.grade(policy, convs[:args.n], resps[:args.n])
            seconds[name].append([b - a for a, b in zip(start, clock())])
    load.append(os.getloadavg()[0])
    diff = float((stock.grade(policy, convs[:args.n], resps[:args.n]).double()
                  - fused.grade(policy, convs[:args.n], resps[:args.n]).double()).abs().max())
    med = {k: sorted(v, key=lambda s: s[1])[len(v) // 2] for k, v in seconds.items()}
    ratios = sorted(c[1] / s[1] for s, c in zip(seconds["stock"], seconds["compiled"]))
    print(f"{Path(str(path)).name if args.grader else args.config}, N={args.n}, {args.rounds} interleaved rounds, "
          f"load {load[0]:.2f} -> {load[1]:.2f}")
    for k, (w, c) in med.items():
        print(f"  {k:9} median {w:7.2f} s wall {c:7.2f} s CPU   (all CPU s: "
              f"{', '.join(f'{s[1]:.2f}' for s in seconds[k])})")
    print(f"  compiled/stock CPU seconds, median of per-round ratios: {ratios[len(ratios) // 2]:.3f}; "
          f"max |dP(yes)| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
