"""Synthetic comparison data over the gold prompts, for fitting and evaluating rewards.

For each gold prompt (its conversation and response type), several completions:
for each, a class of the response type is picked (every class appears for a
prompt when `per_prompt` ≥ the number of classes), then proposition truth
values that put the completion in that class (sampled along the class's
decision diagram, so any class formula works), then a noisy grader's P(yes)
around them. `completion_label` is the class the truth values imply. The RM
score is a noisy function of the class rank, so the RM alone misorders many
pairs, while the propositions carry the class: a fitted RBR term can fix
what the RM gets wrong.

    rows = make_comparisons(policy, seed=0)          # list of dicts, one per line
    write_jsonl(path, rows)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .files import SHARED

GOLD = SHARED / "gold_train.jsonl"


def gold_prompts(path: Path = GOLD) -> list[tuple[list, str]]:
    """(conversation, response type as written) for each gold line, in file order."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((row["prompt"], row["response_type"]))
    return out


def sample_truths(policy, rt, cls: str, rng: np.random.Generator) -> dict[str, bool]:
    """Truth values of the response type's propositions that put a completion in
    class `cls`: each variable fixed in a random order, keeping the class
    satisfiable (its probability with the open variables at ½ stays > 0)."""
    dd = rt.diagrams[rt.classes.index(cls)]
    names = dd.variables
    columns = [0.5] * len(names)
    for v in rng.permutation(len(names)):
        first = bool(rng.random() < 0.5)
        for value in (first, not first):
            columns[v] = float(value)
            if dd.probability(columns) > 0:
                break
    truths = {names[i]: bool(columns[i]) for i in range(len(names))}
    for p in rt.propositions:  # propositions no formula of this type reads
        truths.setdefault(p, bool(rng.random() < 0.5))
    assert policy.classify(rt.name, truths) == cls
    return truths


def make_comparisons(policy, prompts: Optional[Sequence[tuple[list, str]]] = None, per_prompt: Optional[int] = None,
                     seed: int = 0, grader_noise: float = 0.15, rm: bool = True, rm_scale: float = 0.35,
                     rm_noise: float = 1.0, boolean: bool = False, response_types: Optional[Iterable[str]] = None,
                     max_prompts: Optional[int] = None) -> list[dict]:
    """One dict per comparison line (see the module doc).

    grader_noise: how far P(yes) strays from the truth (a Beta-like spread; 0: exact).
    rm_scale / rm_noise: rm_score = −rm_scale · class rank + N(0, rm_noise²).
    boolean: write the truth values themselves instead of P(yes)."""
    rng = np.random.default_rng(seed)
    prompts = gold_prompts() if prompts is None else list(prompts)
    wanted = None if response_types is None else {policy.response_type(r).name for r in response_types}
    rows = []
    used = 0
    for conversation, rt_name in prompts:
        rt = policy.response_type(rt_name)
        if wanted is not None and rt.name not in wanted:
            continue
        if max_prompts is not None and used >= max_prompts:
            break
        used += 1
        k = per_prompt or len(rt.classes) + 1
        classes = list(rng.permutation(rt.classes))
        while len(classes) < k:
            classes.append(rt.classes[int(rng.integers(len(rt.classes)))])
        for j, cls in enumerate(classes[:k]):
            truths = sample_truths(policy, rt, cls, rng)
            if boolean:
                props = dict(truths)
            else:
                props = {p: _noisy(v, grader_noise, rng) for p, v in truths.items()}
            row = {"prompt": conversation, "completion": f"Synthetic completion {j} ({used}).",
                   "response_type": rt.name, "completion_label": cls, "propositions": props}
            if rm:
                rank = rt.classes.index(cls)
                row["rm_score"] = round(float(-rm_scale * rank + rng.normal(0.0, rm_noise)), 6)
            rows.append(row)
    return rows


def _noisy(truth: bool, noise: float, rng: np.random.Generator) -> float:
    """A grader's P(yes): near 1 for true, near 0 for false, and now and then wrong."""
    if noise <= 0:
        return float(truth)
    p = float(np.clip(rng.beta(1.0, 1.0 / noise - 1.0), 0.0, 1.0))  # mean `noise`
    return round(1.0 - p if truth else p, 6)


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
