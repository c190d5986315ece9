"""The plain ways to grade, for tests and benchmarks to compare the fast path
with: one full prompt per forward; padded batches in data order; and what a
competent user writes first, length-sorted batches reading logits only at the
last position."""
from __future__ import annotations

from typing import Sequence

import torch

from rbrlang.runtime.answers import AnswerTokens, yes_probability


@torch.no_grad()
def full_forward(model, ids: Sequence[int], answers: AnswerTokens) -> tuple[float, float]:
    """(P(yes), answer mass) from a forward of the whole prompt."""
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([list(ids)], device=device)).logits[:, -1]
    p, mass = yes_probability(logits, answers)
    return float(p[0]), float(mass[0])


@torch.no_grad()
def padded_forward(model, rows: Sequence[Sequence[int]], answers: AnswerTokens, pad_id: int):
    """A batch of whole prompts, right-padded with an attention mask, read at
    each row's last real token: what one writes without prefix reuse."""
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), device=device)
        mask[i, : len(r)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    last = torch.tensor([len(r) - 1 for r in rows], device=device)
    return yes_probability(logits[torch.arange(len(rows), device=device), last], answers)


@torch.no_grad()
def sorted_last_token_forward(model, rows: Sequence[Sequence[int]], answers: AnswerTokens, pad_id: int,
                              batch: int):
    """Whole prompts sorted by length, in left-padded batches of `batch` rows
    (so every row ends at the last position), with position ids from the
    attention mask and vocabulary logits only at the last position
    (`logits_to_keep=1`). Returns (P(yes), answer mass, padded tokens), in
    the order of `rows`."""
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    p_yes = torch.zeros(len(rows), dtype=torch.float64)
    mass = torch.zeros(len(rows), dtype=torch.float64)
    padded = 0
    for start in range(0, len(order), batch):
        group = order[start:start + batch]
        width = max(len(rows[i]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for k, i in enumerate(group):
            ids[k, width - len(rows[i]):] = torch.tensor(list(rows[i]))
            mask[k, width - len(rows[i]):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       logits_to_keep=1).logits[:, -1]
        p, m = yes_probability(logits, answers)
        p_yes[group], mass[group] = p.double().cpu(), m.double().cpu()
        padded += width * len(group)
    return p_yes, mass, padded


def trie_size(rows) -> int:
    """Distinct prefixes among id sequences: the fewest tokens any sharing forwards."""
    total, prev = 0, ()
    for r in sorted(rows):
        common = next((k for k, (a, b) in enumerate(zip(prev, r)) if a != b), min(len(prev), len(r)))
        total += len(r) - common
        prev = r
    return total
