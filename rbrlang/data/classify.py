"""Classifying labelled completions: JSON lines in, classes out.

Each line names a response type (`response_type`, or a `category` resolved
through the policy's routes) and gives `propositions`: booleans put the
completion in one class; probabilities in [0, 1] give exact class
probabilities under independence.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

from .. import diagnostics as dg
from ..policy import CompiledPolicy
from .jsonl import finite_number, read_jsonl, shown
from .records import LineError, response_type_of


@dataclass(frozen=True)
class Classified:
    line: int
    response_type: str
    cls: str
    classes: dict  # class -> probability, in class order

    def to_json(self) -> dict:
        return {"class": self.cls, "classes": self.classes, "response_type": self.response_type, "line": self.line}


# Kept as a name for the API's users: a labels line that does not fit.
LabelError = LineError


def classify_record(policy: CompiledPolicy, record: Any, line: int = 0) -> Classified:
    """One labelled completion → its class and class probabilities."""
    if not isinstance(record, Mapping):
        raise LineError("E0301", "each line must be a JSON object", None, 'write {"response_type": …, "propositions": {…}}')
    rt_name = response_type_of(policy, record)
    if rt_name is None:
        raise LineError("E0302", f"category {record['category']!r} routes to no response type", "category",
                        "add a `route` for it, or give `response_type` on the line")
    rt = policy.response_type(rt_name)
    labels = record.get("propositions")
    if labels is None:
        raise LineError("E0303", "the line has no `propositions` (its labels)", None,
                        'add the labels: "propositions": {"apology": true, …}')
    if not isinstance(labels, Mapping):
        raise LineError("E0301", "`propositions` must be an object of labels", "propositions",
                        '"propositions": {"apology": true, …}')
    # A name the policy does not have is a mistake in the labels (a misspelling, a proposition
    # since renamed): an error at the name, as the gold and comparison readers make it, not a
    # label ignored in silence while the line is classified without the value the user meant.
    # An error, not a warning: `--keep-going` classifies the other lines, and a misspelt
    # label's intended value would otherwise be lost from every result.
    unknown = [k for k in labels if k not in policy.proposition_names]
    missing = [p for p in rt.propositions if p not in labels]
    if unknown and not missing:
        near = (dg.closest(unknown[0], [p for p in policy.proposition_names if p not in labels])
                or dg.closest(unknown[0], policy.proposition_names))
        raise LineError("E0301", f"`{unknown[0]}` is no proposition of policy `{policy.name}`", unknown[0],
                        f"did you mean `{near}`?" if near else
                        "use the policy's proposition names: " + ", ".join(policy.proposition_names))
    if missing:
        # A key the policy does not know, close to a missing name: a misspelt label.
        slips = [(k, dg.closest(k, missing)) for k in unknown]
        slips = [(k, m) for k, m in slips if m]
        raise LineError("E0303", f"missing label{'s' * (len(missing) > 1)} for {', '.join(missing)}",
                        slips[0][0] if slips else "propositions",
                        f"`{slips[0][0]}` is no proposition of the policy; did you mean `{slips[0][1]}`?" if slips
                        else f"response type `{rt.name}` needs every proposition its classes use")
    values = {}
    soft = False
    for p in rt.propositions:
        v = labels[p]
        if isinstance(v, bool):
            values[p] = float(v)
        elif finite_number(v) is not None and 0.0 <= v <= 1.0:
            values[p] = float(v)
            soft = True
        else:
            raise LineError("E0304", f"label `{p}` is {shown(v)}; labels are true, false or a probability in [0, 1]",
                            p, "use a boolean or a number between 0 and 1")
    if not soft:
        cls = policy.classify(rt.name, {p: bool(v) for p, v in values.items()})
        return Classified(line, rt.name, cls, {c: float(c == cls) for c in rt.classes})
    # Exact class probabilities on the exported decision diagrams, in plain
    # floats: the base install (no torch) classifies probability labels too,
    # with the same float64 arithmetic `policy.class_probabilities` does.
    # A diagram's variables may include propositions no node of this response
    # type tests (their value then does not matter).
    variables = rt.diagrams[0].variables if rt.diagrams else ()
    columns = [values.get(v, 0.0) for v in variables]
    probs = [float(dd.probability(columns)) for dd in rt.diagrams]
    total = sum(probs)
    classes = dict(zip(rt.classes, (p / total if total > 0 else p for p in probs)))
    return Classified(line, rt.name, max(classes, key=classes.get), classes)


def classify_file(policy: CompiledPolicy, path: Path) -> Iterator[Union[Classified, dg.Diagnostic]]:
    """Every line of a JSONL file, as a result or a located diagnostic."""
    for number, text, record in read_jsonl(path):
        if isinstance(record, dg.Diagnostic):
            yield record
            continue
        try:
            yield classify_record(policy, record, number)
        except LineError as exc:
            yield exc.diagnostic(str(path), number, text)
