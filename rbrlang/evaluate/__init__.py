"""Evaluating a compiled policy: its grader against human gold labels (and a
Platt calibration of P(yes)), its rewards on held-out comparisons, and an
offline HTML report with plots.

    evaluation = evaluate(policy, gold=..., probs=... | grader=..., comparisons=..., calibrate=...)
    write_report(evaluation, "report/")

`inputs.py` reads gold sets and probabilities; `rbrlang.data.comparisons` the comparison
data, pairs and error rates; `metrics.py` the scikit-learn scores and the split;
`calibration.py` the Platt fit; `gold.py` and `rewards.py` the two halves of an
evaluation; `plots.py` the matplotlib figures; `report.py` the HTML.
"""
from .evaluation import Evaluation, evaluate
from .report import write_report

__all__ = ["Evaluation", "evaluate", "write_report"]
