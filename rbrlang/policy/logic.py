"""Boolean formulas over propositions, and decision diagrams for exact probabilities.

This module is on the trainer side: it needs neither the parser nor `dd`.
Formulas reference propositions or defines by name (`Ref`); `expand` inlines
defines so that a formula speaks of propositions alone.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence, Union


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Not:
    operand: "Formula"


@dataclass(frozen=True)
class And:
    operands: tuple["Formula", ...]


@dataclass(frozen=True)
class Or:
    operands: tuple["Formula", ...]


Formula = Union[Ref, Not, And, Or]


def to_json(f: Formula):
    if isinstance(f, Ref):
        return f.name
    if isinstance(f, Not):
        return {"not": to_json(f.operand)}
    key = "and" if isinstance(f, And) else "or"
    return {key: [to_json(o) for o in f.operands]}


def from_json(obj) -> Formula:
    if isinstance(obj, str):
        return Ref(obj)
    if "not" in obj:
        return Not(from_json(obj["not"]))
    if "and" in obj:
        return And(tuple(from_json(o) for o in obj["and"]))
    return Or(tuple(from_json(o) for o in obj["or"]))


def expand(f: Formula, defines: Mapping[str, Formula]) -> Formula:
    """Inline defines (already checked acyclic)."""
    if isinstance(f, Ref):
        return expand(defines[f.name], defines) if f.name in defines else f
    if isinstance(f, Not):
        return Not(expand(f.operand, defines))
    return type(f)(tuple(expand(o, defines) for o in f.operands))


def variables(f: Formula) -> set[str]:
    if isinstance(f, Ref):
        return {f.name}
    if isinstance(f, Not):
        return variables(f.operand)
    return set().union(*(variables(o) for o in f.operands)) if f.operands else set()


def evaluate(f: Formula, values: Mapping[str, bool]) -> bool:
    if isinstance(f, Ref):
        return bool(values[f.name])
    if isinstance(f, Not):
        return not evaluate(f.operand, values)
    if isinstance(f, And):
        return all(evaluate(o, values) for o in f.operands)
    return any(evaluate(o, values) for o in f.operands)


def brute_force_probability(f: Formula, probs: Mapping[str, float]) -> float:
    """P(f) under independence, by enumerating every assignment (for tests)."""
    names = sorted(variables(f))
    total = 0.0
    for bits in itertools.product((False, True), repeat=len(names)):
        weight = 1.0
        for name, bit in zip(names, bits):
            weight *= probs[name] if bit else 1.0 - probs[name]
        if evaluate(f, dict(zip(names, bits))):
            total += weight
    return total


@dataclass(frozen=True)
class DecisionDiagram:
    """A reduced ordered BDD with plain (uncomplemented) edges.

    `nodes[i] = (variable, low, high)` for id `i + 2`; ids 0 and 1 are the
    false and true leaves. Children always precede parents, so one pass in
    order evaluates the diagram. A variable missing from a path does not
    matter there, which is why P(node) = (1-p)·P(low) + p·P(high) is exact
    for independent variables.
    """

    variables: tuple[str, ...]
    nodes: tuple[tuple[int, int, int], ...]
    root: int

    def to_json(self):
        return {"variables": list(self.variables), "nodes": [list(n) for n in self.nodes], "root": self.root}

    @staticmethod
    def from_json(obj) -> "DecisionDiagram":
        return DecisionDiagram(tuple(obj["variables"]), tuple(tuple(n) for n in obj["nodes"]), obj["root"])

    def evaluate(self, values: Mapping[str, bool]) -> bool:
        node = self.root
        while node > 1:
            var, low, high = self.nodes[node - 2]
            node = high if values[self.variables[var]] else low
        return node == 1

    def probability(self, columns: Sequence):
        """Exact P(true) given one probability column per variable.

        Columns may be floats or same-shaped tensors (a batch); the arithmetic
        is the same either way. A constant diagram gives a plain float.
        """
        values: list = [0.0, 1.0]
        for var, low, high in self.nodes:
            p = columns[var]
            values.append((1 - p) * values[low] + p * values[high])
        return values[self.root]
