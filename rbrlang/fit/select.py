"""Train/validation split by prompt, and the weight decay chosen on validation.

The split is by prompt, never by pair: pairs of one prompt share completions,
so a pair-level split (the paper's released fitter) leaks the validation
prompts into training and flatters the held-out numbers. The split depends
only on the seed and the prompts' content (not the file's line order).

The decay is chosen from `DECAYS` by the validation error rate (the method's
judge), ties broken by the validation hinge loss, then by the larger decay
(the simpler model). The weights kept are those fitted on the training
prompts, so the validation numbers reported are for prompts the weights never
saw (though the decay was chosen on them).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import UsageError
from .solver import PairProblem, Solution, hinge, solve

DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_DECAY = 1e-3  # when there is no validation split to choose by


def check_settings(decay, margin, val_fraction, decays=DECAYS) -> None:
    """UsageError for settings no fit can use (checked before any data is read)."""
    def positive(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0

    if decay is not None and not positive(decay):
        raise UsageError(f"the decay must be a positive number, not {decay!r}: without it the optimum is "
                         "neither unique nor bounded")
    if not positive(margin):
        raise UsageError(f"the margin must be a positive number, not {margin!r}")
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
        raise UsageError(f"the validation fraction must be at least 0 and below 1, not {val_fraction!r}")
    if decay is None and not (decays and all(positive(d) for d in decays)):
        raise UsageError("every decay in the grid must be a positive number")


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # [m] bool per pair
    val: np.ndarray  # [m] bool per pair
    train_prompts: int
    val_prompts: int


def split_by_prompt(group_keys: Sequence[str], pair_groups: np.ndarray, val_fraction: float, seed: int) -> Split:
    """Assign whole prompts (groups) to validation: `pair_groups[p]` is the
    index into `group_keys` of pair p's prompt. At least one prompt on each
    side when there are two or more and `val_fraction` > 0."""
    used = np.unique(pair_groups)
    n = used.size
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    # Sorted by content hash, then shuffled by the seed: the same prompts go to
    # validation whatever order the file lists them in.
    digests = [hashlib.sha256(group_keys[g].encode("utf-8")).hexdigest() for g in used]
    ordered = used[np.argsort(np.asarray(digests))]
    chosen = np.random.default_rng(seed).permutation(n)[:n_val]
    val_groups = np.zeros(len(group_keys), dtype=bool)
    val_groups[ordered[chosen]] = True
    val = val_groups[pair_groups]
    return Split(train=~val, val=val, train_prompts=n - n_val, val_prompts=n_val)


@dataclass(frozen=True)
class Candidate:
    decay: float
    solution: Solution
    val_error: Optional[float]
    val_loss: Optional[float]


def pair_error(problem: PairProblem, w: np.ndarray) -> Optional[float]:
    """Error rate of RM + w·features over the problem's pairs (ties are errors)."""
    if problem.pairs == 0:
        return None
    total = problem.offsets + problem.features @ w
    return float(np.mean(~(total[problem.better] > total[problem.worse])))


def choose_decay(train: PairProblem, val: PairProblem, margin: float, decays: Sequence[float] = DECAYS,
                 tol: float = 1e-7, progress=None) -> tuple[Candidate, list[Candidate]]:
    """Fit every decay on `train` (largest first, reusing the cutting planes:
    they bound the hinge loss whatever the decay), score each on `val`."""
    candidates = []
    planes: tuple = ()
    w0 = None
    for decay in sorted(decays, reverse=True):
        sol = solve(train, decay, margin, tol=tol, planes=planes, w0=w0)
        planes, w0 = sol.planes, sol.weights
        candidates.append(Candidate(decay, sol, pair_error(val, sol.weights), hinge(val, sol.weights, margin)
                                    if val.pairs else None))
        if progress is not None:
            progress.update(1)
    scored = [c for c in candidates if c.val_error is not None]
    if not scored:
        best = next(c for c in candidates if c.decay == DEFAULT_DECAY) if DEFAULT_DECAY in decays else candidates[0]
        return best, candidates
    best = min(scored, key=lambda c: (round(c.val_error, 12), round(c.val_loss, 12), -c.decay))
    return best, candidates
