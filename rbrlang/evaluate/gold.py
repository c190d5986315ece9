"""The grader against human gold labels: per-proposition scores, calibration,
class accuracy and confusion matrices."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..policy import CompiledPolicy
from ..policy.calibration import Calibration
from .calibration import CalibrationScores, fit_calibration
from .inputs import GoldSet
from .metrics import Confusion, PropositionScores, Split, confusion, proposition_scores, split_by_prompt


@dataclass(frozen=True, eq=False)
class GoldReport:
    path: str
    rows: int
    split: Split
    source: str  # where P(yes) came from: "grader …" or "probabilities …"
    probabilities: str  # which P(yes) the scores use: raw, calibration.json, or calibrated now
    propositions: tuple[PropositionScores, ...]
    confusions: tuple[Confusion, ...]
    report_accuracy: float  # class accuracy on the report split only
    calibration: Optional[tuple[CalibrationScores, ...]]  # when --calibrate
    fitted: Optional[Calibration]  # the calibration fitted now (--calibrate)
    # pooled over grader propositions on the report split, for the reliability plots
    y: np.ndarray = field(repr=False)
    p_raw: np.ndarray = field(repr=False)
    p_cal: Optional[np.ndarray] = field(repr=False)
    by_proposition: dict = field(repr=False)  # name -> (y, p_raw, p_cal or None) on the report split
    unrouted: int = 0

    @property
    def class_accuracy(self) -> float:
        n = sum(c.n for c in self.confusions)
        return float(sum(np.trace(c.matrix) for c in self.confusions) / n) if n else float("nan")


def evaluate_gold(policy: CompiledPolicy, gold: GoldSet, raw: np.ndarray, source: str, calibrate: bool,
                  seed: int, gold_sha256: str = "") -> GoldReport:
    split = split_by_prompt(gold.prompt_keys, seed, gold.path)
    fitted, cal_scores = None, None
    if calibrate:
        fitted, scores = fit_calibration(policy, gold.labels, raw, split.fit, split.report, gold_sha256)
        cal_scores = tuple(scores)
        probs, what = fitted.apply(policy.proposition_names, raw), "P(yes) calibrated now (Platt scaling fitted on the fit split)"
    elif policy.calibration is not None:
        probs, what = policy.calibrate(raw), "P(yes) calibrated with the compiled folder's calibration.json"
    else:
        probs, what = raw, "raw P(yes) (no calibration)"

    props = []
    for j, name in enumerate(policy.proposition_names):
        has = ~np.isnan(gold.labels[:, j])
        fit, rep = split.fit[has[split.fit]], split.report[has[split.report]]
        s = proposition_scores(name, gold.labels[fit, j], probs[fit, j], gold.labels[rep, j], probs[rep, j])
        if s is not None:
            props.append(s)

    confusions, correct_rep, n_rep = [], 0, 0
    on_report = np.zeros(len(gold), dtype=bool)
    on_report[split.report] = True
    names = policy.proposition_names
    for rt_name in policy.response_types:
        rows = [i for i, r in enumerate(gold.response_types) if r == rt_name]
        rt = policy.response_type(rt_name)
        if not rows:
            continue
        true = [policy.classify(rt.name, {p: bool(gold.labels[i, names.index(p)]) for p in rt.propositions})
                for i in rows]
        matrix = np.nan_to_num(probs[rows], nan=0.0)  # columns outside this response type are unused
        cp = policy.class_probabilities(rt.name, matrix).numpy()
        predicted = [rt.classes[k] for k in cp.argmax(axis=1)]
        confusions.append(confusion(rt.name, rt.classes, true, predicted))
        for i, t, p in zip(rows, true, predicted):
            if on_report[i]:
                n_rep += 1
                correct_rep += t == p

    graders = [j for j, p in enumerate(policy.propositions) if p.graded]
    calibrated = fitted is not None or policy.calibration is not None
    ys, raws, cals, by_prop = [], [], [], {}
    for j in graders:
        rep = split.report[~np.isnan(gold.labels[split.report, j])]
        if len(rep):
            entry = (gold.labels[rep, j], raw[rep, j], probs[rep, j] if calibrated else None)
            by_prop[names[j]] = entry
            ys.append(entry[0]), raws.append(entry[1]), cals.append(probs[rep, j])
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    return GoldReport(gold.path, len(gold), split, source, what, tuple(props), tuple(confusions),
                      correct_rep / n_rep if n_rep else float("nan"), cal_scores, fitted, cat(ys), cat(raws),
                      cat(cals) if calibrated else None, by_prop,
                      unrouted=sum(r is None for r in gold.response_types))
