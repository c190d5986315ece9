"""Fitting per-proposition Platt scaling of P(yes) on gold labels (scikit-learn).

For each grader proposition: a one-feature logistic regression of the human
label on logit(P(yes)), fitted on the fit split. We use Platt's (1999) smoothed
targets, y+ = (N+ + 1) / (N+ + 2) and y- = 1 / (N- + 2), as scikit-learn's own
sigmoid calibration does, written as sample weights over both labels, and no
(effective) penalty: the targets keep the optimum finite even when the gold labels are
perfectly separated (a grader that is always right), where a plain fit diverges.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..policy import CompiledPolicy
from ..policy.calibration import EPS, Calibration, PlattMap, platt, template_hash
from .metrics import brier, ece

MIN_PER_CLASS = 1  # a proposition needs a yes and a no label on the fit split


@dataclass(frozen=True)
class CalibrationScores:
    name: str
    fitted: bool
    reason: str  # why not fitted, when not
    n_fit: int
    n_report: int
    ece_raw: float
    ece_calibrated: Optional[float]
    brier_raw: float
    brier_calibrated: Optional[float]


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_platt(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(coef, intercept) of P_cal = sigmoid(coef * logit(p) + intercept)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=int)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (pos + 1) / (pos + 2), 1 / (neg + 2))
    z = logit(p)
    X = np.concatenate([z, z])[:, None]
    labels = np.concatenate([np.ones(len(y), dtype=int), np.zeros(len(y), dtype=int)])
    weights = np.concatenate([target, 1 - target])
    # C this large is no penalty in effect (the smoothed targets already keep the
    # optimum finite), spelled so every scikit-learn >= 1.4 accepts it without warnings.
    model = LogisticRegression(C=1e10, solver="lbfgs", max_iter=1000, tol=1e-10)
    model.fit(X, labels, sample_weight=weights)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def fit_calibration(policy: CompiledPolicy, labels: np.ndarray, probs: np.ndarray, fit_rows: np.ndarray,
                    report_rows: np.ndarray, gold_sha256: str = "") -> tuple[Calibration, list[CalibrationScores]]:
    """Platt maps for every grader proposition with both labels on the fit rows;
    ECE and Brier before and after on the report rows."""
    maps, scores = {}, []
    for j, prop in enumerate(policy.propositions):
        if not prop.graded:
            continue
        has = ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
        fit = fit_rows[has[fit_rows]]
        rep = report_rows[has[report_rows]]
        if len(rep) == 0 and len(fit) == 0:
            continue
        y_fit, p_fit = labels[fit, j], probs[fit, j]
        y_rep, p_rep = labels[rep, j], probs[rep, j]
        raw = (ece(y_rep, p_rep), brier(y_rep, p_rep)) if len(rep) else (float("nan"), float("nan"))
        n_yes = int(y_fit.sum())
        if min(n_yes, len(y_fit) - n_yes) < MIN_PER_CLASS:
            reason = f"the fit split has only {'yes' if n_yes else 'no'} labels" if len(fit) else "no fit rows"
            scores.append(CalibrationScores(prop.name, False, reason, len(fit), len(rep), raw[0], None, raw[1], None))
            continue
        coef, intercept = fit_platt(y_fit, p_fit)
        cal = (ece(y_rep, platt(logit(p_rep), coef, intercept)), brier(y_rep, platt(logit(p_rep), coef, intercept))) \
            if len(rep) else (None, None)
        metrics = {"fit_rows": len(fit), "report_rows": len(rep), "fit_yes": n_yes,
                   "ece_raw": _num(raw[0]), "ece_calibrated": _num(cal[0]),
                   "brier_raw": _num(raw[1]), "brier_calibrated": _num(cal[1])}
        if gold_sha256:
            metrics["gold_sha256"] = gold_sha256
        maps[prop.name] = PlattMap(prop.name, template_hash(policy, prop.name), coef, intercept, metrics)
        scores.append(CalibrationScores(prop.name, True, "", len(fit), len(rep), raw[0], cal[0], raw[1], cal[1]))
    return Calibration(policy.name, maps), scores


def _num(v):
    return None if v is None or not np.isfinite(v) else round(float(v), 6)
