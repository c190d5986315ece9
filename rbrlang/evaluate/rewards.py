"""Rewards on held-out comparisons: error rates of RM only, RBR only and RM + RBR
per response type, and the per-prompt centred rewards the histograms show."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..policy import CompiledPolicy
from ..data.comparisons import ComparisonData, error_rate, pairs_of

KINDS = ("RM", "RBR", "RM + RBR")


@dataclass(frozen=True)
class RewardRow:
    response_type: str
    prompts: int
    completions: int
    pairs: int
    rbr_kind: str  # "fitted weights" or "expected class score (not fitted)"
    errors: dict  # kind -> error rate or None (no RM scores, or no pairs)
    has_rm: bool = True  # every line has an `rm_score`


@dataclass(frozen=True, eq=False)
class RewardReport:
    path: str
    rows: tuple[RewardRow, ...]
    labels: dict = field(repr=False)  # response type -> its labels, best first (histogram order)
    centred: dict = field(repr=False)  # (kind, response type) -> (labels [n], centred rewards [n])
    notes: tuple[str, ...] = ()


def label_order(policy: CompiledPolicy, response_type: str) -> list[str]:
    rt = policy.response_type(response_type)
    order = [lab for chain in rt.ranks for group in chain for lab in group]
    return list(dict.fromkeys(order + list(rt.labels)))


def centred(rewards: np.ndarray, data: ComparisonData, rows: np.ndarray) -> np.ndarray:
    """Each reward minus the mean reward of its prompt group (the paper's per-prompt centring)."""
    out = np.array(rewards[rows], dtype=float)
    _, group = np.unique(np.asarray([data.groups[i] for i in rows], dtype=object), return_inverse=True)
    sums = np.bincount(group, weights=out)
    return out - (sums / np.bincount(group))[group]


def evaluate_rewards(policy: CompiledPolicy, data: ComparisonData, probs: np.ndarray,
                     notes: tuple[str, ...] = ()) -> RewardReport:
    """`probs` [N, P]: the P(yes) the rewards use (given or graded, calibrated as the policy says)."""
    weights = policy.weights
    rows, labels, cents = [], {}, {}
    for rt_name in policy.response_types:
        idx = np.array([i for i, r in enumerate(data.response_types) if r == rt_name], dtype=int)
        if not len(idx):
            continue
        rt = policy.response_type(rt_name)
        matrix = np.nan_to_num(probs[idx], nan=0.0)  # columns outside this response type are unused
        feats = policy.features(rt.name, matrix)
        rbr = np.asarray(policy.reward(rt.name, feats), dtype=float)
        rm = data.rm[idx]
        has_rm = bool(np.isfinite(rm).all())
        scores = {"RBR": rbr}
        if has_rm:
            scores["RM"] = rm
            scores["RM + RBR"] = np.asarray(policy.reward(rt.name, feats, rm), dtype=float)
        full = {k: np.full(len(data), np.nan) for k in scores}
        for k, v in scores.items():
            full[k][idx] = v
        better, worse = pairs_of(policy, data, idx)
        errors = {k: (error_rate(full[k], better, worse) if k in full else None) for k in KINDS}
        rows.append(RewardRow(rt.name, len({data.groups[i] for i in idx}), len(idx), len(better),
                              "fitted weights" if rt.name in weights else "expected class score (not fitted)",
                              errors, has_rm))
        labels[rt.name] = label_order(policy, rt.name)
        row_labels = np.array([data.labels[i] for i in idx])
        for k in KINDS:
            if k in full:
                cents[(k, rt.name)] = (row_labels, centred(full[k], data, idx))
    extra = []
    for row in rows:
        if row.pairs == 0:
            extra.append(f"{row.response_type}: no pairs (every prompt has completions of one rank group only)")
        if not row.has_rm:
            extra.append(f"{row.response_type}: some lines have no `rm_score`, so RM and RM + RBR are not shown")
    if data.unrouted:
        extra.append(f"{data.unrouted} lines route to no response type (no RBR reward) and were skipped")
    return RewardReport(data.path, tuple(rows), labels, cents, tuple(notes) + tuple(extra))


def held_out_note(policy: CompiledPolicy, sha: str) -> Optional[str]:
    """A warning when the comparisons are the data the weights were fitted on."""
    weights = policy.weights
    fitted_on = [name for name, fw in weights.items() if fw.data_sha256 == sha]
    if fitted_on:
        return (f"these comparisons are the data the weights of {', '.join(fitted_on)} were fitted on: "
                "their error rates are training error, not held-out error")
    return None
