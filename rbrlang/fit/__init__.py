"""Fitting reward weights: ranked comparisons → pairs → exact hinge fit → weights.

One public entry, `fit_policy`. Per response type, the reward is

    R = rm_score + w · features + bias

with `w` the exact minimiser (`solver.py`) of

    decay/2 |w|² + mean over train pairs of max(0, margin − (R_better − R_worse))

over every ordered pair of completions of one prompt that the rank order
separates (`data/comparisons.py`), the decay chosen on a validation split by
prompt (`select.py`) unless given.

The bias: pairwise losses do not determine it (it cancels in every pair). It
is set so that the RBR term `w · features + bias` has mean 0 over the training
prompts' completions of that response type: the RM keeps its scale and the
RBR term only moves completions relative to each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..data.comparisons import ComparisonData, pairs_of, read_comparisons
from ..data.probabilities import probabilities, require_context
from ..data.records import PromptTooLong
from ..errors import UsageError
from ..policy import CompiledPolicy
from ..policy.weights import FittedWeights
from .select import (DECAYS, DEFAULT_DECAY, Candidate, check_settings, choose_decay, pair_error,
                     split_by_prompt)
from .solver import PairProblem, hinge, solve

__all__ = ["FitResult", "ResponseTypeFit", "fit_policy", "DECAYS"]


@dataclass(frozen=True)
class ResponseTypeFit:
    """What `rbrc fit` prints for one response type; `weights` is what it writes."""

    response_type: str
    weights: FittedWeights
    grid: tuple = ()  # (decay, val_error, val_loss) per decay tried; empty when the decay was given

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.weights.metrics


@dataclass(frozen=True)
class FitResult:
    fits: Mapping[str, ResponseTypeFit]
    warnings: tuple = ()  # Diagnostics from the data (prompts / response types without pairs)
    data_sha256: str = ""
    graded: int = 0  # lines graded by the grader
    skipped: Mapping[str, str] = field(default_factory=dict)  # response type -> why it got no weights

    @property
    def weights(self) -> dict[str, FittedWeights]:
        return {name: f.weights for name, f in self.fits.items()}


def fit_policy(policy: CompiledPolicy, data, grader=None, decay: Optional[float] = None, margin: float = 1.0,
               seed: int = 0, val_fraction: float = 0.2, decays: Sequence[float] = DECAYS,
               tol: float = 1e-7, progress: Optional[bool] = False) -> FitResult:
    """Fit every response type that has comparison pairs.

    data: a path to comparison JSON lines, or what `read_comparisons` returned.
    grader: grades lines without `propositions` (`grade(policy, conversations,
    responses) -> [N, P]`); without one such lines are errors.
    decay: the L2 weight decay; None chooses it from `decays` on validation.
    Raises DataError for bad data (nothing usable included), UsageError for
    bad settings. Writes nothing: see `rbrlang.policy.weights.write_weights`."""
    check_settings(decay, margin, val_fraction, decays)
    if not isinstance(data, ComparisonData):
        data = read_comparisons(policy, data, grader=grader is not None)
    probs, graded = _probabilities(policy, data, grader, progress)
    names = list(dict.fromkeys(data.response_types))
    fits, skipped = {}, {}
    from tqdm import tqdm

    steps = len(names) * (1 if decay is not None else len(decays))
    with tqdm(total=steps, unit="fit", desc="fitting", disable=None if progress is None else not progress) as bar:
        for name in names:
            rows = data.rows(name)
            better, worse = pairs_of(policy, data, rows)
            if better.size == 0:
                skipped[name] = "no usable pairs"
                bar.update(1 if decay is not None else len(decays))
                continue
            fits[name] = _fit_one(policy, data, probs, name, rows, better, worse, decay, margin, seed,
                                  val_fraction, decays, tol, bar)
    return FitResult(fits, data.warnings, data.sha256, graded, skipped)


def _probabilities(policy: CompiledPolicy, data: ComparisonData, grader,
                   progress: Optional[bool]) -> tuple[np.ndarray, int]:
    """`[N, P]` P(yes): the lines' own, the grader's for lines without them;
    calibrated (calibration.json) where a grader gave them or a line gave a
    grader's number, as the reward will see them. Human booleans are not."""
    if grader is None and data.to_grade.any():
        raise UsageError("some lines have no `propositions`: give a grader to grade them")
    if grader is not None:  # every prompt's length against the grader's context, before any grading
        try:
            require_context(policy, grader, data.conversations, data.completions, np.flatnonzero(data.to_grade))
        except PromptTooLong as exc:
            raise exc.located(data.path, data.lines) from None
    result = probabilities(policy, grader, data.conversations, data.completions, given=data.given,
                           progress=progress)
    return result.p_yes, result.graded


def _features(policy: CompiledPolicy, name: str, probs: np.ndarray) -> np.ndarray:
    """`[n, F]` features in schema order (`policy.features`), float64."""
    import torch

    rt = policy.response_type(name)
    index = {p: j for j, p in enumerate(policy.proposition_names)}
    used = [index[p] for p in rt.propositions]
    clean = np.zeros_like(probs)  # columns of other response types may be NaN: never read
    clean[:, used] = probs[:, used]
    return policy.features(name, torch.as_tensor(clean, dtype=torch.float64)).double().numpy()


def _fit_one(policy, data, probs, name, rows, better, worse, decay, margin, seed, val_fraction, decays, tol, bar):
    rt = policy.response_type(name)
    X = np.zeros((len(data), len(rt.features)))
    X[rows] = _features(policy, name, probs[rows])
    has_rm = data.has_rm(rows)
    offsets = np.where(np.isfinite(data.rm), data.rm, 0.0) if has_rm else np.zeros(len(data))
    group_index = {g: k for k, g in enumerate(dict.fromkeys(data.groups[i] for i in rows))}
    keys = list(group_index)
    pair_groups = np.array([group_index[data.groups[i]] for i in better], dtype=np.int64)
    split = split_by_prompt(keys, pair_groups, val_fraction, seed)
    train = PairProblem(X, offsets, better[split.train], worse[split.train])
    val = PairProblem(X, offsets, better[split.val], worse[split.val])
    grid: tuple = ()
    if decay is None and val.pairs:
        best, candidates = choose_decay(train, val, margin, decays, tol, bar)
        grid = tuple((c.decay, c.val_error, c.val_loss) for c in sorted(candidates, key=lambda c: c.decay))
    else:  # given, or nothing to choose by: the default
        chosen = decay if decay is not None else DEFAULT_DECAY
        best = Candidate(chosen, solve(train, chosen, margin, tol=tol), None, None)
        bar.update(1 if decay is not None else len(decays))
    sol = best.solution
    w = sol.weights
    # The bias centres the RBR term on the training prompts' completions.
    train_groups = set(np.array(keys, dtype=object)[np.unique(pair_groups[split.train])].tolist())
    train_rows = np.array([i for i in rows if data.groups[i] in train_groups], dtype=np.int64)
    bias = -float((X[train_rows] @ w).mean())
    zero = np.zeros_like(w)
    metrics = {
        "prompts": split.train_prompts + split.val_prompts, "train_prompts": split.train_prompts,
        "val_prompts": split.val_prompts, "completions": int(rows.size),
        "pairs": int(better.size), "train_pairs": train.pairs, "val_pairs": val.pairs,
        "train_loss": sol.loss, "val_loss": hinge(val, w, margin) if val.pairs else None,
        "train_error": pair_error(train, w), "val_error": pair_error(val, w),
        "rm_train_error": pair_error(train, zero) if has_rm else None,
        "rm_val_error": pair_error(val, zero) if has_rm and val.pairs else None,
        "objective": sol.objective, "gap": sol.gap, "iterations": sol.iterations,
        "rm": has_rm, "decay_chosen_by": "validation" if decay is None and val.pairs else
        ("given" if decay is not None else "default (no validation prompts)"),
        "seed": seed, "val_fraction": val_fraction,
    }
    if grid:
        metrics["decay_grid"] = [{"decay": d, "val_error": e, "val_loss": v} for d, e, v in grid]
    fw = FittedWeights(response_type=name, schema_hash=rt.schema_hash, features=tuple(rt.features),
                       weights=tuple(float(x) for x in w), bias=bias, margin=float(margin), decay=float(best.decay),
                       data_sha256=data.sha256, metrics=_json_safe(metrics))
    return ResponseTypeFit(name, fw, grid)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
