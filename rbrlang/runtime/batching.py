"""Length-sorted batches under a token budget: little padding, bounded memory."""
from __future__ import annotations

from typing import Sequence


def plan_batches(lengths: Sequence[int], token_budget: int, max_batch: int,
                 batch_overhead: int = 256) -> list[list[int]]:
    """Group row indices into right-padded batches.

    Rows are sorted longest first, so each batch is a run of similar lengths
    whose first row sets the padded width. Among such runs, dynamic
    programming picks the split that forwards the fewest tokens, counting
    each batch's fixed cost as `batch_overhead` tokens, with every batch
    within `max_batch` rows and `token_budget` padded tokens (a row longer
    than the budget goes alone).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    ls = [lengths[i] for i in order]
    n = len(ls)
    inf = float("inf")
    best = [0.0] + [inf] * n  # best[j]: cost of the first j rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, max(-1, j - 1 - max_batch), -1):
            rows = j - i
            width = ls[i]
            if rows > 1 and width * rows > token_budget:
                break  # earlier starts are only wider
            cost = best[i] + width * rows + batch_overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches = []
    j = n
    while j > 0:
        batches.append(order[cut[j]:j])
        j = cut[j]
    return batches[::-1]


def plan_packs(groups: Sequence[Sequence[int]], token_budget: int) -> list[list[tuple[int, list[int]]]]:
    """Group rows into packed forwards (no padding: a pack's cost is the sum
    of its rows' lengths).

    `groups[g]` holds the lengths of the rows that continue group g's cached
    prefix. Rows are taken in order and a pack is closed when the next row
    would take it past `token_budget` tokens (a row longer than the budget
    goes alone), so a group's rows stay together unless the budget cuts them.
    Returns, per pack, `(group, [row indices])` in order.
    """
    packs: list[list[tuple[int, list[int]]]] = []
    current: list[tuple[int, list[int]]] = []
    used = 0
    for g, lengths in enumerate(groups):
        for r, n in enumerate(lengths):
            if current and used + n > token_budget:
                packs.append(current)
                current, used = [], 0
            if current and current[-1][0] == g:
                current[-1][1].append(r)
            else:
                current.append((g, [r]))
            used += n
    if current:
        packs.append(current)
    return packs
