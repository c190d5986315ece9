"""Boolean formulas over propositions, and decision diagrams for exact probabilities.

This module is on the trainer side: it needs neither the parser nor `dd`.
Formulas reference propositions or defines by name (`Ref`); `expand` inlines
defines so that a formula speaks of propositions alone.

Every walk over a formula goes through `fold`, which keeps its own stack: a
chain of 2,000 defines, or `all()` over 2,000 operands, must not meet
Python's recursion limit, and a define used in many places is visited once.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar, Union

T = TypeVar("T")


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


def operands(f: Formula) -> tuple[Formula, ...]:
    if isinstance(f, Ref):
        return ()
    return (f.operand,) if isinstance(f, Not) else f.operands


def fold(f: Formula, combine: Callable[[Formula, tuple], T], defines: Mapping[str, Formula] = {},
         memo: dict | None = None) -> T:
    """Post-order evaluation without recursion: `combine(node, values of its
    operands)`, with `combine(Ref(p), ())` for a proposition `p`. A reference
    to a define has its body's value, computed once however often it is used
    (defines are checked acyclic before anyone folds through them); pass the
    same `memo` to reuse those values across folds with the same `combine`."""
    memo = {} if memo is None else memo
    out: list = []
    stack: list[tuple[Formula, bool]] = [(f, False)]
    while stack:
        g, done = stack.pop()
        if isinstance(g, Ref) and g.name in defines:
            if g.name in memo:
                out.append(memo[g.name])
            elif done:
                memo[g.name] = out[-1]  # the body's value, already on `out`
            else:
                stack.append((g, True))
                stack.append((defines[g.name], False))
            continue
        kids = operands(g)
        if done or not kids:
            values = tuple(out[len(out) - len(kids):]) if kids else ()
            if kids:
                del out[len(out) - len(kids):]
            out.append(combine(g, values))
        else:
            stack.append((g, True))
            stack.extend((k, False) for k in reversed(kids))
    return out[-1]


def _rebuild(g: Formula, values: tuple) -> Formula:
    if isinstance(g, Ref):
        return g
    if isinstance(g, Not):
        return Not(values[0])
    return type(g)(values)


def to_json(f: Formula):
    def combine(g, values):
        if isinstance(g, Ref):
            return g.name
        if isinstance(g, Not):
            return {"not": values[0]}
        return {"and" if isinstance(g, And) else "or": list(values)}
    return fold(f, combine)


def from_json(obj) -> Formula:
    """The inverse of `to_json`, with its own stack like `fold`."""
    out: list[Formula] = []
    stack: list[tuple[object, bool]] = [(obj, False)]
    while stack:
        o, done = stack.pop()
        if isinstance(o, str):
            out.append(Ref(o))
            continue
        key = "not" if "not" in o else "and" if "and" in o else "or"
        kids = [o["not"]] if key == "not" else list(o[key])
        if not done:
            stack.append((o, True))
            stack.extend((k, False) for k in reversed(kids))
            continue
        values = tuple(out[len(out) - len(kids):]) if kids else ()
        if kids:
            del out[len(out) - len(kids):]
        out.append(Not(values[0]) if key == "not" else (And if key == "and" else Or)(values))
    return out[-1]


def expand(f: Formula, defines: Mapping[str, Formula]) -> Formula:
    """Inline defines (already checked acyclic). A define used twice is one
    shared object, but a walk over the result that does not share sees it
    twice: prefer `fold` with `defines` over walking an expanded formula."""
    return fold(f, _rebuild, defines)


def variables(f: Formula, defines: Mapping[str, Formula] = {}) -> set[str]:
    """The propositions `f` mentions, through `defines` (each walked once)."""
    found: set[str] = set()
    walked: set[str] = set()
    stack = [f]
    while stack:
        g = stack.pop()
        if not isinstance(g, Ref):
            stack.extend(operands(g))
        elif g.name not in defines:
            found.add(g.name)
        elif g.name not in walked:
            walked.add(g.name)
            stack.append(defines[g.name])
    return found


def evaluate(f: Formula, values: Mapping[str, bool]) -> bool:
    def combine(g, vs):
        if isinstance(g, Ref):
            return bool(values[g.name])
        if isinstance(g, Not):
            return not vs[0]
        return all(vs) if isinstance(g, And) else any(vs)
    return fold(f, combine)


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
    for independent variables. `variables` are the policy's propositions in
    declaration order; the diagram may test them in another order (the
    compiler picks one that keeps it small), which neither pass here needs
    to know.
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
