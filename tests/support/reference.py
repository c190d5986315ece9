"""The plain way to grade: one full prompt, one forward. Tests and benchmarks
compare the fast path against it."""
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
