"""Proofs and exports over binary decision diagrams (the `dd` package).

Used by the checker (partition proofs), codegen (exported diagrams) and
`rbrc explain` (sum-of-products). The trainer side never imports this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from dd.autoref import BDD, Function

from ..policy.logic import And, DecisionDiagram, Formula, Not, Ref


class Space:
    """One BDD manager over an ordered list of propositions."""

    def __init__(self, variables: Sequence[str]):
        self.variables = tuple(variables)
        self.bdd = BDD()
        self.bdd.configure(reordering=False)  # keep declaration order: exports stay stable
        if self.variables:
            self.bdd.declare(*self.variables)

    def build(self, f: Formula) -> Function:
        if isinstance(f, Ref):
            return self.bdd.var(f.name)
        if isinstance(f, Not):
            return ~self.build(f.operand)
        parts = [self.build(o) for o in f.operands]
        acc = self.bdd.true if isinstance(f, And) else self.bdd.false
        for p in parts:
            acc = (acc & p) if isinstance(f, And) else (acc | p)
        return acc

    @property
    def true(self) -> Function:
        return self.bdd.true

    @property
    def false(self) -> Function:
        return self.bdd.false

    def example(self, u: Function, care: Sequence[str]) -> dict[str, bool]:
        """One satisfying assignment, over `care` (unmentioned ones false)."""
        picked = self.bdd.pick(u) or {}
        return {v: bool(picked.get(v, False)) for v in care}

    def export(self, u: Function) -> DecisionDiagram:
        """Plain-edge diagram (dd uses complemented edges internally)."""
        ids: dict[Function, int] = {}
        nodes: list[tuple[int, int, int]] = []
        index = {v: i for i, v in enumerate(self.variables)}

        def visit(f: Function) -> int:
            if f == self.bdd.false:
                return 0
            if f == self.bdd.true:
                return 1
            if f in ids:
                return ids[f]
            low, high = (~f.low, ~f.high) if f.negated else (f.low, f.high)
            lo, hi = visit(low), visit(high)
            nodes.append((index[f.var], lo, hi))
            ids[f] = len(nodes) + 1
            return ids[f]

        try:
            root = visit(u)
        finally:
            # `visit` is a closure that refers to itself, so it lives until the
            # cycle collector runs; dd insists its nodes are released before the
            # manager goes, so let go of them now.
            ids.clear()
        return DecisionDiagram(self.variables, tuple(nodes), root)

    def from_diagram(self, dd: DecisionDiagram) -> Function:
        """Rebuild a function from an exported diagram (over these variables)."""
        values = [self.bdd.false, self.bdd.true]
        for var, low, high in dd.nodes:
            x = self.bdd.var(dd.variables[var])
            values.append((x & values[high]) | (~x & values[low]))
        root = values[dd.root]
        values.clear()  # release dd nodes before the manager (see `export`)
        return root

    def cube(self, literals: Mapping[str, bool]) -> Function:
        acc = self.bdd.true
        for v, val in literals.items():
            acc &= self.bdd.var(v) if val else ~self.bdd.var(v)
        return acc

    def prime_cover(self, u: Function) -> list[dict[str, bool]]:
        """An irredundant sum of prime implicants of `u`.

        Starts from the diagram's disjoint paths, widens each cube while it
        still implies `u` (making it prime), then drops cubes the others
        already cover. Minimal in practice for policy formulas, though not a
        guaranteed minimum (that problem is NP-hard).
        """
        if u == self.bdd.false:
            return []
        cubes: list[dict[str, bool]] = []
        for path in self._paths(u):
            cube = dict(path)
            for v in sorted(cube, key=self.variables.index):
                trial = {k: b for k, b in cube.items() if k != v}
                if self.cube(trial) & ~u == self.bdd.false:
                    cube = trial
            if cube not in cubes:
                cubes.append(cube)
        changed = True
        while changed:
            changed = False
            for i in sorted(range(len(cubes)), key=lambda i: -len(cubes[i])):
                rest = self.bdd.false
                for j, c in enumerate(cubes):
                    if j != i:
                        rest |= self.cube(c)
                if rest == u:
                    del cubes[i]
                    changed = True
                    break
        order = {v: i for i, v in enumerate(self.variables)}
        return sorted(cubes, key=lambda c: (len(c), sorted((order[k], not b) for k, b in c.items())))

    def _paths(self, u: Function):
        stack = [(u, {})]
        while stack:
            f, path = stack.pop()
            if f == self.bdd.true:
                yield path
                continue
            if f == self.bdd.false:
                continue
            low, high = (~f.low, ~f.high) if f.negated else (f.low, f.high)
            stack.append((low, {**path, f.var: False}))
            stack.append((high, {**path, f.var: True}))


@dataclass(frozen=True)
class PartitionProblem:
    kind: str  # "overlap", "gap" or "empty"
    classes: tuple[str, ...]
    assignment: dict

    def __hash__(self):  # assignment is a dict; problems are compared by content
        return hash((self.kind, self.classes, tuple(sorted(self.assignment.items()))))


def partition_problems(space: Space, classes: Sequence[tuple[str, Function]],
                       care: Sequence[str]) -> list[PartitionProblem]:
    """Which classes can never hold, which pairs overlap, and a gap if any."""
    problems: list[PartitionProblem] = []
    for name, f in classes:
        if f == space.false:
            problems.append(PartitionProblem("empty", (name,), {}))
    for i, (a, fa) in enumerate(classes):
        for b, fb in classes[i + 1:]:
            both = fa & fb
            if both != space.false:
                problems.append(PartitionProblem("overlap", (a, b), space.example(both, care)))
    union = space.false
    for _, f in classes:
        union |= f
    if union != space.true:
        problems.append(PartitionProblem("gap", (), space.example(~union, care)))
    return problems

