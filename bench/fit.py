"""Fitting benchmark: 10^6 ranked pairs × 30 features, the exact hinge fit.

A synthetic problem shaped like comparison data: P prompts, each with K
completions over 5 ranked labels (2 per label: 40 separated pairs a prompt),
30 features in [0, 1] of which some carry the label, and a noisy RM score.
Timed stages, each what `rbrc fit` does after grading:

  pairs    every (better, worse) pair within a prompt (`data.comparisons.ordered_pairs`)
  solve    one exact fit at a fixed decay (`fit.solver.solve`), to a certified gap
  select   the split by prompt and the whole decay grid on it (`fit.select.choose_decay`)

Every fit reports its certificate: objective − lower bound (the gap to the
exact optimum of the regularised hinge loss). `--adam STEPS` also runs what a
first-order fitter does (the paper's is AdamW with a fixed number of steps):
full-batch Adam on the same objective, and reports how far above the
certified optimum it stops.

    python bench/fit.py                  # 25,000 prompts × 10 completions = 10^6 pairs, 30 features
    python bench/fit.py --prompts 2500   # 10^5 pairs
    python bench/fit.py --json
    python bench/fit.py --prompts 2500 --adam 1000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rbrlang.data.comparisons import ordered_pairs  # noqa: E402
from rbrlang.fit.select import DECAYS, choose_decay, pair_error, split_by_prompt  # noqa: E402
from rbrlang.fit.solver import PairProblem, solve  # noqa: E402

LABELS = 5


def problem(prompts: int, per_label: int, features: int, seed: int):
    rng = np.random.default_rng(seed)
    k = LABELS * per_label
    n = prompts * k
    labels = np.tile(np.repeat(np.arange(LABELS), per_label), prompts)
    groups = np.repeat(np.arange(prompts), k)
    X = rng.random((n, features))
    informative = min(8, features)
    X[:, :informative] = np.clip(X[:, :informative] * 0.5 + 0.12 * (LABELS - 1 - labels)[:, None]
                                 + rng.normal(0, 0.1, (n, informative)), 0, 1)
    rm = -0.35 * labels + rng.normal(0, 1.0, n)
    above = np.triu(np.ones((LABELS, LABELS), dtype=bool), 1)  # label 0 best
    return X, rm, groups, labels, above


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=25000)
    ap.add_argument("--per-label", type=int, default=2)
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--decay", type=float, default=1e-3, help="the decay of the single `solve` stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adam", type=int, default=0, metavar="STEPS",
                    help="also run full-batch Adam (lr 0.01) for STEPS steps on the `solve` objective")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    X, rm, groups, labels, above = problem(args.prompts, args.per_label, args.features, args.seed)
    t = time.perf_counter()
    better, worse = ordered_pairs(groups, labels, above)
    t_pairs = time.perf_counter() - t
    full = PairProblem(X, rm, better, worse)

    t = time.perf_counter()
    sol = solve(full, args.decay)
    t_solve = time.perf_counter() - t

    adam = run_adam(full, args.decay, args.adam, sol.objective) if args.adam else None

    t = time.perf_counter()
    keys = [str(g) for g in range(args.prompts)]
    split = split_by_prompt(keys, groups[better], 0.2, args.seed)
    train = PairProblem(X, rm, better[split.train], worse[split.train])
    val = PairProblem(X, rm, better[split.val], worse[split.val])
    best, candidates = choose_decay(train, val, 1.0)
    t_select = time.perf_counter() - t

    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "python": platform.python_version(),
        "numpy": np.__version__, "pairs": int(better.size), "completions": int(X.shape[0]),
        "features": int(X.shape[1]),
        "seconds": {"pairs": round(t_pairs, 3), "solve": round(t_solve, 3), "select": round(t_select, 3)},
        "solve": {"decay": args.decay, "iterations": sol.iterations, "objective": sol.objective,
                  "gap": sol.gap, "train_error": pair_error(full, sol.weights)},
        "select": {"train_pairs": train.pairs, "val_pairs": val.pairs, "chosen_decay": best.decay,
                   "rm_val_error": pair_error(val, np.zeros(X.shape[1])),
                   "grid": [{"decay": c.decay, "iterations": c.solution.iterations, "gap": c.solution.gap,
                             "val_error": c.val_error} for c in candidates]},
        "grid": list(DECAYS),
    }
    if adam:
        result["adam"] = adam
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['pairs']:,} pairs over {result['completions']:,} completions × {result['features']} features")
    print(f"pairs   {t_pairs:7.2f} s")
    print(f"solve   {t_solve:7.2f} s  decay {args.decay:g}: {sol.iterations} iterations, "
          f"objective {sol.objective:.6f}, certified gap {sol.gap:.1e}")
    print(f"select  {t_select:7.2f} s  {len(candidates)} decays on {train.pairs:,} train / {val.pairs:,} val pairs; "
          f"chosen {best.decay:g}")
    for c in candidates:
        print(f"          decay {c.decay:<7g} {c.solution.iterations:4d} iterations  gap {c.solution.gap:.1e}  "
              f"val error {c.val_error:.4f}")
    print(f"          RM alone: val error {result['select']['rm_val_error']:.4f}")
    if adam:
        print(f"adam    {adam['seconds']:7.2f} s  {adam['steps']} steps: objective {adam['objective']:.6f}, "
              f"{adam['above_optimum']:.1e} above the exact optimum")


def run_adam(p: PairProblem, decay: float, steps: int, optimum: float) -> dict:
    """Full-batch Adam on decay/2 |w|² + mean hinge: a first-order fitter with a fixed budget."""
    import torch

    X = torch.as_tensor(p.features)
    b, w_ = torch.as_tensor(p.better), torch.as_tensor(p.worse)
    c = torch.as_tensor(p.targets(1.0))
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01)
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        s = X @ w
        loss = 0.5 * decay * (w @ w) + torch.clamp(c - (s[b] - s[w_]), min=0).mean()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        s = X @ w
        final = float(0.5 * decay * (w @ w) + torch.clamp(c - (s[b] - s[w_]), min=0).mean())
    return {"steps": steps, "seconds": round(seconds, 3), "objective": final, "above_optimum": final - optimum}


if __name__ == "__main__":
    main()
