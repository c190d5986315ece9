"""What checking the P(yes) values costs `class_probabilities` / `features`.

`CompiledPolicy` refuses values outside [0, 1] and NaN (one fused min/max
reduction per call). This times, on `compiled/safety` (23 propositions), the
check alone, and the whole call with and without it, for an [N, 23] batch.

    python bench/policy_checks.py [--rows 4096] [--repeat 200]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rbrlang.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int) -> float:
    """Fastest of `repeat` calls, after 10 warm-up calls, in seconds: the machine
    is shared, and the minimum is the figure other work disturbs least."""
    for _ in range(10):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--response-type", default="hard_refuse")
    args = ap.parse_args()
    policy = load_policy(ROOT / "compiled/safety")
    rt = policy.response_type(args.response_type)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"[{args.rows}, {len(policy.propositions)}], response type {rt.name}")
    for dtype in (torch.float32, torch.float64):
        probs = torch.rand(args.rows, len(policy.propositions), dtype=dtype)
        check = timed(lambda: policy._probabilities(probs), args.repeat)
        unchecked = timed(lambda: policy._class_probabilities(rt, probs), args.repeat)
        checked = timed(lambda: policy.class_probabilities(rt.name, probs), args.repeat)
        feats = timed(lambda: policy.features(rt.name, probs), args.repeat)
        print(f"{str(dtype):14} check {check * 1e6:8.1f} us   class_probabilities unchecked "
              f"{unchecked * 1e6:8.1f} us, checked {checked * 1e6:8.1f} us   features {feats * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
