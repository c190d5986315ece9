"""Classifying labelled completions: JSON lines in, classes out.

Each line names a response type (`response_type`, or a `category` resolved
through the policy's routes) and gives `propositions`: booleans put the
completion in one class; probabilities in [0, 1] give exact class
probabilities under independence.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

from . import diagnostics as dg
from .jsonl import read_jsonl
from .policy import CompiledPolicy, PolicyError
from .source import Span


@dataclass(frozen=True)
class Classified:
    line: int
    response_type: str
    cls: str
    classes: dict  # class -> probability, in class order

    def to_json(self) -> dict:
        return {"class": self.cls, "classes": self.classes, "response_type": self.response_type, "line": self.line}


class LabelError(ValueError):
    def __init__(self, code: str, message: str, help: str, key: str | None = None):
        super().__init__(message)
        self.code, self.message, self.help, self.key = code, message, help, key


def classify_record(policy: CompiledPolicy, record: Any, line: int = 0) -> Classified:
    """One labelled completion → its class and class probabilities."""
    if not isinstance(record, Mapping):
        raise LabelError("E0301", "each line must be a JSON object", 'write {"response_type": …, "propositions": {…}}')
    rt_name = record.get("response_type")
    if rt_name is None and "category" in record:
        category = record["category"]
        rt_name = policy.route(str(category))
        if rt_name is None:
            raise LabelError("E0302", f"category {category!r} routes to no response type",
                             "add a `route` for it, or give `response_type` on the line", "category")
    if rt_name is None:
        raise LabelError("E0301", "the line has neither `response_type` nor `category`",
                         "add one of them", None)
    try:
        rt = policy.response_type(str(rt_name))
    except PolicyError as exc:
        raise LabelError("E0302", str(exc), "use one of the policy's response types", "response_type")
    labels = record.get("propositions")
    if not isinstance(labels, Mapping):
        raise LabelError("E0301", "`propositions` must be an object of labels", '"propositions": {"apology": true, …}',
                         "propositions")
    missing = [p for p in rt.propositions if p not in labels]
    if missing:
        raise LabelError("E0303", f"missing label{'s' * (len(missing) > 1)} for {', '.join(missing)}",
                         f"response type `{rt.name}` needs every proposition its classes use", "propositions")
    values = {}
    soft = False
    for p in rt.propositions:
        v = labels[p]
        if isinstance(v, bool):
            values[p] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0:
            values[p] = float(v)
            soft = True
        else:
            raise LabelError("E0304", f"label `{p}` is {json.dumps(v)}; labels are true, false or a probability in [0, 1]",
                             "use a boolean or a number between 0 and 1", p)
    if not soft:
        cls = policy.classify(rt.name, {p: bool(v) for p, v in values.items()})
        return Classified(line, rt.name, cls, {c: float(c == cls) for c in rt.classes})
    import torch

    row = torch.tensor([[values.get(p, 0.0) for p in policy.proposition_names]], dtype=torch.float64)
    probs = policy.class_probabilities(rt.name, row)[0].tolist()
    classes = dict(zip(rt.classes, probs))
    return Classified(line, rt.name, max(classes, key=classes.get), classes)


def classify_file(policy: CompiledPolicy, path: Path) -> Iterator[Union[Classified, dg.Diagnostic]]:
    """Every line of a JSONL file, as a result or a located diagnostic."""
    for number, text, record in read_jsonl(path):
        if isinstance(record, dg.Diagnostic):
            yield record
            continue
        try:
            yield classify_record(policy, record, number)
        except LabelError as exc:
            yield dg.error(exc.code, _key_span(str(path), number, text, exc.key), exc.message, exc.help)


def _key_span(file: str, line: int, text: str, key: str | None) -> Span:
    """Point at `"key"` in the line when it is there."""
    if key:
        at = text.find(json.dumps(key))
        if at >= 0:
            return Span(file, line, at + 1, line, at + 1 + len(json.dumps(key)))
    return Span(file, line, 1, line, 2)
