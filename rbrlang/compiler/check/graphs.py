"""Cycle finding for the checker's graphs (define dependencies, rank orders)."""
from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Iterator


def cycles(nodes: Iterable[Hashable], successors: Callable[[Hashable], Iterable[tuple[Hashable, Any]]]
           ) -> Iterator[tuple[list, Any]]:
    """Every back edge of a depth-first search: the cycle's nodes (its first
    node repeated at the end) and the payload of the edge that closes it.
    Iterative, since a hostile policy may chain thousands of names."""
    state: dict = {}  # 1: on the current path, 2: done
    for start in nodes:
        if state.get(start):
            continue
        path, pending = [start], [iter(successors(start))]
        state[start] = 1
        while pending:
            step = next(pending[-1], None)
            if step is None:
                state[path.pop()] = 2
                pending.pop()
                continue
            node, payload = step
            if state.get(node) == 1:
                yield path[path.index(node):] + [node], payload
            elif not state.get(node):
                state[node] = 1
                path.append(node)
                pending.append(iter(successors(node)))
