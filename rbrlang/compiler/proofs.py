"""Proofs and exports over binary decision diagrams (the `dd` package).

Used by the checker (partition proofs, and the exported diagrams codegen
writes out) and `rbrc explain` (sum-of-products). The trainer side never
imports this.
"""
from __future__ import annotations

import heapq
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from dd.autoref import BDD, Function

from ..policy.logic import And, DecisionDiagram, Formula, Not, Ref, fold

# Nodes one policy's diagrams may create, partition proofs included. dd never
# collects garbage while reordering is off, so this counts the work done, not
# only what is kept: the pure-Python package makes about 200,000 nodes a
# second, and an exported node takes about 90 bytes of `policy.json`. The
# budget stops a formula that would explode (`(x0 and y0) or … or (x19 and
# y19)` with every x declared before every y needs millions of nodes) at the
# node that crosses it, before the time or the memory is spent.
NODE_BUDGET = 50_000


class TooLarge(Exception):
    """The diagrams need more than `budget` nodes in this variable order."""

    def __init__(self, budget: int):
        super().__init__(f"more than {budget} decision-diagram nodes")
        self.budget = budget


class Space:
    """One BDD manager over an ordered list of propositions.

    `variables` is the policy's declaration order, which exported diagrams
    index into; `order` is the order the diagrams test them in (by default the
    same). Reordering stays off so that one policy always gives the same
    diagrams (their bytes are part of each response type's schema hash).
    """

    def __init__(self, variables: Sequence[str], order: Sequence[str] | None = None,
                 budget: int | None = None):
        self.variables = tuple(variables)
        self.order = tuple(order) if order is not None else self.variables
        if sorted(self.order) != sorted(self.variables):
            raise ValueError("`order` must hold exactly the variables")
        self.bdd = BDD()
        self.bdd.configure(reordering=False)
        if self.order:
            self.bdd.declare(*self.order)
        self.budget = budget
        self._vars: dict[str, Function] = {}
        self._defines: Mapping[str, Formula] | None = None
        self._built: dict[str, Function] = {}  # define name -> its function, for `_defines`
        if budget is not None:
            # dd raises "full" when a new node would get an id past this.
            self.bdd._bdd.max_nodes = budget + len(self.order) + 2

    @property
    def nodes(self) -> int:
        """Nodes created so far (the budget's measure)."""
        return len(self.bdd)

    @contextmanager
    def working(self):
        """Room for dd's recursion, and the budget as `TooLarge`.

        dd's apply and its walks recurse once per variable level, so a policy
        with 2,000 propositions needs 2,000 frames beyond the caller's; the
        limit is raised only for as long as the work runs.
        """
        depth, frame = 0, sys._getframe()
        while frame is not None:
            depth, frame = depth + 1, frame.f_back
        old = sys.getrecursionlimit()
        need = depth + 3 * len(self.order) + 200
        if need > old:
            sys.setrecursionlimit(need)
        full = False
        try:
            yield
        except RuntimeError as e:
            if self.budget is None or not str(e).startswith("full:"):
                raise
            full = True
            self._forget_half_added_node()
        finally:
            if need > old:
                sys.setrecursionlimit(old)
        if full:
            # Raised out here, not from the handler: dd's frames (holding
            # nodes of this manager) go with the handled error, now.
            raise TooLarge(self.budget)

    def _forget_half_added_node(self) -> None:
        # dd's `find_or_add` enters a node in its tables, then fails to find
        # the next free id before counting the node's references to its
        # children; the manager would then fail its own teardown check. The
        # node is still at the free id dd was about to move past: take it out.
        b = self.bdd._bdd
        u = b._min_free
        if u in b._succ and b._ref.get(u) == 0:
            del b._pred[b._succ.pop(u)]
            del b._ref[u]

    def build(self, f: Formula, defines: Mapping[str, Formula] = {}) -> Function:
        """The function of `f`, each define built once for this space (see
        `logic.fold`), whichever formula meets it first."""
        if self._defines is not defines:
            self._defines, self._built = defines, {}
        if not self._vars:
            self._vars = {v: self.bdd.var(v) for v in self.order}

        def combine(g, values):
            if isinstance(g, Ref):
                return self._vars[g.name]
            if isinstance(g, Not):
                return ~values[0]
            return self._join(values, isinstance(g, And))

        with self.working():
            return fold(f, combine, defines, self._built)

    def _join(self, parts: Iterable[Function], conjunction: bool) -> Function:
        # Deepest operand first: each step then puts a higher variable over
        # what is built so far, so `all(p0, …, p1999)` creates one node a step
        # (top first copies the whole chain every time, 2 million nodes).
        acc = self.bdd.true if conjunction else self.bdd.false
        for p in sorted(parts, key=lambda u: -u.level):
            acc = (acc & p) if conjunction else (acc | p)
        return acc

    @property
    def true(self) -> Function:
        return self.bdd.true

    @property
    def false(self) -> Function:
        return self.bdd.false

    def example(self, u: Function, care: Sequence[str]) -> dict[str, bool]:
        """One satisfying assignment, over `care` (unmentioned ones false)."""
        with self.working():
            picked = self.bdd.pick(u) or {}
        return {v: bool(picked.get(v, False)) for v in care}

    def support(self, u: Function) -> set[str]:
        with self.working():
            return set(u.support)

    def export(self, u: Function) -> DecisionDiagram:
        """Plain-edge diagram (dd uses complemented edges internally).

        Numbered in post-order, low child before high, with a stack of its
        own (a diagram is as deep as the policy has propositions). Walks dd's
        integer edges, not `Function`s: a `Function` per node costs a
        reference count both ways, and an export can have 100,000 nodes.
        """
        m = u.manager  # integer edges: -e is the complement of e, 1 is true
        position = {v: i for i, v in enumerate(self.variables)}  # not `.index`: quadratic in a large policy
        var_of = [position[m.var_at_level(i)] for i in range(len(self.order))]
        ids: dict[int, int] = {-1: 0, 1: 1}
        nodes: list[tuple[int, int, int]] = []
        stack = [u.node]
        while stack:
            e = stack[-1]
            if e in ids:
                stack.pop()
                continue
            level, low, high = m.succ(e)
            if e < 0:
                low, high = -low, -high
            if high not in ids or low not in ids:
                stack.extend(g for g in (high, low) if g not in ids)  # low on top: numbered first
                continue
            stack.pop()
            nodes.append((var_of[level], ids[low], ids[high]))
            ids[e] = len(nodes) + 1
        return DecisionDiagram(self.variables, tuple(nodes), ids[u.node])

    def from_diagram(self, dd: DecisionDiagram) -> Function:
        """Rebuild a function from an exported diagram (over these variables)."""
        values = [self.bdd.false, self.bdd.true]
        with self.working():
            for var, low, high in dd.nodes:
                values.append(self.bdd.ite(self.bdd.var(dd.variables[var]), values[high], values[low]))
        root = values[dd.root]
        values.clear()  # release dd nodes before the manager (see `export`)
        return root

    def cube(self, literals: Mapping[str, bool]) -> Function:
        with self.working():
            return self._join((self.bdd.var(v) if val else ~self.bdd.var(v) for v, val in literals.items()), True)

    def prime_cover(self, u: Function) -> list[dict[str, bool]]:
        """An irredundant sum of prime implicants of `u`.

        Starts from the diagram's disjoint paths, widens each cube while it
        still implies `u` (making it prime), then drops cubes the others
        already cover. Minimal in practice for policy formulas, though not a
        guaranteed minimum (that problem is NP-hard).
        """
        with self.working():
            return self._prime_cover(u)

    def _prime_cover(self, u: Function) -> list[dict[str, bool]]:
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
    with space.working():
        return _partition_problems(space, classes, care)


def _partition_problems(space: Space, classes: Sequence[tuple[str, Function]],
                        care: Sequence[str]) -> list[PartitionProblem]:
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



def appearance_order(variables: Sequence[str], formulas: Iterable[Formula],
                     defines: Mapping[str, Formula] = {}) -> tuple[str, ...]:
    """`variables` in the order a left-to-right walk of `formulas` first meets
    them (through defines), the rest after in their own order.

    The classic static order for decision diagrams: propositions that appear
    together in a term end up next to each other. `(x0 and y0) or (x1 and y1)
    …` then takes 2 nodes a term, where every x before every y takes 2^n.
    """
    seen: dict[str, None] = {}
    for f in formulas:
        fold(f, lambda g, _: seen.setdefault(g.name) if isinstance(g, Ref) else None, defines)
    return tuple(seen) + tuple(v for v in variables if v not in seen)


def diagram_order(variables: Sequence[str], diagrams: Iterable[DecisionDiagram]) -> tuple[str, ...]:
    """An order the exported diagrams are consistent with (each node's variable
    comes before its children's), ties in declaration order: rebuilding a
    diagram in its own order takes as many nodes as it has."""
    after: dict[int, set[int]] = {i: set() for i in range(len(variables))}
    for d in diagrams:
        for var, low, high in d.nodes:
            for child in (low, high):
                if child > 1:
                    after[var].add(d.nodes[child - 2][0])
    before = {i: 0 for i in after}
    for i, kids in after.items():
        for k in kids:
            before[k] += 1
    ready = [i for i, n in before.items() if n == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        i = heapq.heappop(ready)
        out.append(variables[i])
        for k in after[i]:
            before[k] -= 1
            if before[k] == 0:
                heapq.heappush(ready, k)
    placed = set(out)
    return tuple(out) + tuple(v for v in variables if v not in placed)  # a cycle: diagrams of two orders
