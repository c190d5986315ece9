"""Metrics of a grader against human labels (scikit-learn), and the split they use.

Everything tuned (the yes-threshold, the calibration) is fitted on the `fit`
split and reported on the `report` split; the split is by prompt, so the
completions of one prompt never sit on both sides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import PathError

ECE_BINS = 10


@dataclass(frozen=True, eq=False)
class Split:
    fit: np.ndarray  # row indices
    report: np.ndarray
    seed: int


def split_by_prompt(prompt_keys: Sequence[str], seed: int, where: str = "gold set") -> Split:
    """Half the prompts (rounded down, at least one) to `fit`, the rest to `report`."""
    unique = sorted(set(prompt_keys))
    if len(unique) < 2:
        raise PathError(where, "has completions of only one prompt",
                        "the gold set needs at least two prompts to fit on one and report on the other")
    order = np.random.default_rng(seed).permutation(len(unique))
    fit_keys = {unique[i] for i in order[: max(1, len(unique) // 2)]}
    on_fit = np.array([k in fit_keys for k in prompt_keys])
    return Split(np.flatnonzero(on_fit), np.flatnonzero(~on_fit), seed)


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: equal-width bins of P(yes), the row-weighted mean
    of |observed yes rate - mean P(yes)| per bin."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(y.astype(int), p, pos_label=1))


def tune_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The yes-threshold with the best F1 on (y, p); 0.5 when y has one class.
    Candidates are midpoints between distinct P(yes) values, ties broken toward 0.5."""
    from sklearn.metrics import f1_score

    if len(np.unique(y)) < 2:
        return 0.5
    values = np.unique(p)
    candidates = np.unique(np.concatenate([[0.5], (values[1:] + values[:-1]) / 2 if len(values) > 1 else []]))
    best, best_t = -1.0, 0.5
    for t in sorted(candidates, key=lambda t: abs(t - 0.5)):
        score = f1_score(y, p >= t, zero_division=0)
        if score > best + 1e-12:
            best, best_t = score, float(t)
    return best_t


@dataclass(frozen=True)
class PropositionScores:
    name: str
    threshold: float  # tuned on the fit split
    n: int  # report-split rows with a label
    positives: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    auroc: Optional[float]  # None when the report split has one class
    ece: float
    brier: float


def proposition_scores(name: str, y_fit, p_fit, y_rep, p_rep) -> Optional[PropositionScores]:
    """Threshold tuned on the fit rows, every score on the report rows; None without report rows."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    if len(y_rep) == 0:
        return None
    t = tune_threshold(y_fit, p_fit) if len(y_fit) else 0.5
    pred = p_rep >= t
    # Undefined scores are NaN, shown as –, not 0: with no yes prediction there
    # is no precision, with no yes label no recall, with neither no F1.
    tp = int(np.sum(pred & (y_rep == 1)))
    fp, fn = int(np.sum(pred & (y_rep == 0))), int(np.sum(~pred & (y_rep == 1)))
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    auroc = float(roc_auc_score(y_rep, p_rep)) if len(np.unique(y_rep)) == 2 else None
    return PropositionScores(name, t, len(y_rep), int(y_rep.sum()), float(accuracy_score(y_rep, pred)),
                             float(precision), float(recall), float(f1), auroc, ece(y_rep, p_rep),
                             brier(y_rep, p_rep))


@dataclass(frozen=True, eq=False)
class Confusion:
    response_type: str
    classes: tuple[str, ...]
    matrix: np.ndarray  # [true, predicted] counts

    @property
    def n(self) -> int:
        return int(self.matrix.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.matrix) / self.n) if self.n else float("nan")


def confusion(response_type: str, classes: Sequence[str], true: Sequence[str], predicted: Sequence[str]) -> Confusion:
    from sklearn.metrics import confusion_matrix

    m = confusion_matrix(list(true), list(predicted), labels=list(classes)) if len(true) else \
        np.zeros((len(classes), len(classes)), dtype=int)
    return Confusion(response_type, tuple(classes), m)
