"""The synth loop: instructions → generations → grades → kept comparison lines.

Every (prompt, class) has K *slots*. In each round (up to `max_tries`), every
slot not yet filled is asked for again: slot k gets instruction variant
k mod V of its class, and the slots of one (prompt, class, variant) are one
generation request, `n` = how many, with a seed derived from the run's seed,
the prompt, the class, the variant and the round (so a rerun asks the same
requests, and the generation cache answers them). Each reply is graded through
the product's grading pipeline (`data.probabilities`, grade cache included);
it fills its slot when the policy's class probabilities put it in the class
it was asked for (first, or at least `min_probability` when that is given).
An empty reply never fills one. What stays empty after the last round is
reported per class, not retried forever.

The kept lines are `rbrc fit`'s comparison format, each with the grader's raw
P(yes) (fit calibrates given P(yes) once, as it does a grader's) and, with an
`rm`, the reward model's score."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..compiler.instructions import ClassInstruction, class_instructions
from ..data.probabilities import CHUNK, probabilities
from ..generate.base import GenerationRequest, Generator
from ..policy import CompiledPolicy
from .cache import GenerationCache, request_key
from .prompts import SynthPrompt

BATCH = 16  # generation requests per generator call (graded together): the progress and resume step
CUTOFF = 0.5  # P(yes) above which a proposition counts as true when naming what kept a reply out


@dataclass
class ClassTally:
    """One (response type, class): what was asked for and what came of it."""

    slots: int = 0  # prompts × K
    generated: int = 0  # replies received (from the generator or the cache)
    empty: int = 0
    accepted: int = 0
    rejected: int = 0  # graded into another class
    unreached: int = 0  # slots still empty after the last round
    kept_out: Counter = field(default_factory=Counter)  # "proposition → yes/no wanted": rejections it caused
    landed: Counter = field(default_factory=Counter)  # class a rejected reply was put in

    @property
    def rate(self) -> Optional[float]:
        """Acceptance rate: filled slots per graded reply (None before any)."""
        graded = self.accepted + self.rejected
        return self.accepted / graded if graded else None

    def to_json(self) -> dict:
        return {"slots": self.slots, "generated": self.generated, "empty": self.empty, "accepted": self.accepted,
                "rejected": self.rejected, "unreached": self.unreached, "acceptance_rate": self.rate,
                "kept_out_by": dict(self.kept_out.most_common()), "landed_in": dict(self.landed.most_common())}


@dataclass(frozen=True)
class SynthResult:
    lines: tuple[dict, ...]  # comparison lines, by prompt, class order, slot
    tallies: dict  # (response type, class) -> ClassTally
    skipped: dict  # (response type, class) -> why no reply was asked for
    requests: int  # generation requests made
    cached: int  # of them answered by the generation cache
    rounds: int


def derived_seed(seed: int, *parts) -> int:
    digest = hashlib.sha256(json.dumps([seed, *parts], ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def instructed(instruction: str, conversation: Sequence) -> tuple[dict, ...]:
    """The generator's messages: the instruction as the system turn (before the
    conversation's own system prompt, if it has one), then the conversation."""
    messages = [dict(m) for m in conversation]
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": instruction + "\n\n" + messages[0]["content"]}
    else:
        messages.insert(0, {"role": "system", "content": instruction})
    return tuple(messages)


def planned(policy: CompiledPolicy, prompts: Sequence[SynthPrompt], per_class: int,
            instructions: Optional[dict] = None) -> tuple[int, dict]:
    """(slots to fill, {(rt, class): why it is skipped}) before any generation."""
    instructions = instructions if instructions is not None else class_instructions(policy)
    slots, skipped = 0, {}
    for p in prompts:
        for name in policy.response_type(p.response_type).classes:
            ins = instructions[(p.response_type, name)]
            if ins.variants:
                slots += per_class
            else:
                skipped[(p.response_type, name)] = ins.problem[1]
    return slots, skipped


def synthesize(policy: CompiledPolicy, prompts: Sequence[SynthPrompt], generator: Generator, grader: Any, *,
               per_class: int = 2, max_tries: int = 3, seed: int = 0, min_probability: Optional[float] = None,
               cache: Optional[GenerationCache] = None, rm: Optional[Callable] = None, batch: int = BATCH,
               chunk: int = CHUNK, progress: Optional[bool] = False) -> SynthResult:
    import numpy as np
    import torch

    instructions: dict[tuple[str, str], ClassInstruction] = class_instructions(policy)
    index = {n: i for i, n in enumerate(policy.proposition_names)}
    tallies: dict = {}
    filled: dict[tuple[int, str, int], tuple[str, np.ndarray]] = {}  # (prompt, class, slot) -> (reply, P(yes))
    total, skipped = planned(policy, prompts, per_class, instructions)
    for p in prompts:
        for name in policy.response_type(p.response_type).classes:
            if instructions[(p.response_type, name)].variants:
                tallies.setdefault((p.response_type, name), ClassTally()).slots += per_class
    bar = _bar(total, progress)
    requests_made = cached = rounds = 0
    try:
        for round_ in range(max_tries):
            work = []  # (prompt index, class, variant, slots, request, key)
            for i, p in enumerate(prompts):
                for name in policy.response_type(p.response_type).classes:
                    ins = instructions[(p.response_type, name)]
                    if not ins.variants:
                        continue
                    by_variant: dict[int, list[int]] = {}
                    for k in range(per_class):
                        if (i, name, k) not in filled:
                            by_variant.setdefault(k % len(ins.variants), []).append(k)
                    for v, ks in by_variant.items():
                        text = ins.variants[v]
                        s = derived_seed(seed, p.key, p.response_type, name, v, round_)
                        req = GenerationRequest(instructed(text, p.conversation), len(ks), s)
                        key = request_key(generator.identity, p.key, p.response_type, name, text, round_, s, len(ks))
                        work.append((i, name, v, ks, req, key))
            if not work:
                break
            rounds += 1
            for start in range(0, len(work), batch):
                part = work[start:start + batch]
                replies: dict[int, list[str]] = {}
                missing = []
                for j, (*_, req, key) in enumerate(part):
                    got = cache.get(key) if cache is not None else None
                    if got is not None and len(got) == req.n:
                        replies[j] = got
                        cached += 1
                    else:
                        missing.append(j)
                # In the generator's own step (transformers: one request; a server: as many as are in
                # flight), each step's replies cached before the next: a kill loses at most one step.
                step = max(1, int(getattr(generator, "batch_size", len(missing) or 1)))
                for at in range(0, len(missing), step):
                    some = missing[at:at + step]
                    answers = generator.generate([part[j][4] for j in some])
                    for j, texts in zip(some, answers, strict=True):
                        replies[j] = list(texts)
                        if cache is not None:
                            cache.put(part[j][5], texts)
                requests_made += len(part)
                candidates = []  # (prompt index, class, variant, slot, reply)
                for j, (i, name, v, ks, _req, _key) in enumerate(part):
                    tally = tallies[(prompts[i].response_type, name)]
                    for k, reply in zip(ks, replies[j]):
                        tally.generated += 1
                        if not reply.strip():
                            tally.empty += 1
                        else:
                            candidates.append((i, name, v, k, reply))
                if not candidates:
                    continue
                result = probabilities(policy, grader, [list(prompts[c[0]].conversation) for c in candidates],
                                       [c[4] for c in candidates], calibration=None, chunk=chunk, progress=False)
                raw = result.p_yes
                calibrated = policy.calibrate(raw) if policy.calibration is not None else raw
                for row, (i, name, v, k, reply) in enumerate(candidates):
                    rt = policy.response_type(prompts[i].response_type)
                    tally = tallies[(rt.name, name)]
                    classes = policy.class_probabilities(rt.name, torch.as_tensor(calibrated[row:row + 1]))[0]
                    want = rt.classes.index(name)
                    ok = int(torch.argmax(classes)) == want if min_probability is None else \
                        float(classes[want]) >= min_probability
                    if ok:
                        tally.accepted += 1
                        filled[(i, name, k)] = (reply, raw[row])
                        if bar is not None:
                            bar.update(1)
                    else:
                        tally.rejected += 1
                        tally.landed[rt.classes[int(torch.argmax(classes))]] += 1
                        for prop, value in instructions[(rt.name, name)].cubes[v].items():
                            if (calibrated[row, index[prop]] > CUTOFF) != value:
                                tally.kept_out[f"{prop} (wanted {'yes' if value else 'no'})"] += 1
                if bar is not None:
                    accepted = sum(t.accepted for t in tallies.values())
                    graded = accepted + sum(t.rejected for t in tallies.values())
                    bar.set_postfix_str(f"round {round_ + 1}/{max_tries}, generated "
                                        f"{sum(t.generated for t in tallies.values())}, accepted {accepted}/{graded}"
                                        + (f" ({accepted / graded:.0%})" if graded else ""), refresh=False)
    finally:
        if bar is not None:
            bar.close()
    for i, p in enumerate(prompts):
        for name in policy.response_type(p.response_type).classes:
            if instructions[(p.response_type, name)].variants:
                tallies[(p.response_type, name)].unreached += sum((i, name, k) not in filled for k in range(per_class))
    lines = _lines(policy, prompts, filled, per_class, rm)
    return SynthResult(tuple(lines), tallies, skipped, requests_made, cached, rounds)


def _lines(policy, prompts, filled, per_class: int, rm) -> list[dict]:
    index = {n: i for i, n in enumerate(policy.proposition_names)}
    out = []
    for i, p in enumerate(prompts):
        rt = policy.response_type(p.response_type)
        graded = [n for n in rt.propositions if policy.proposition(n).graded]
        for name in rt.classes:
            for k in range(per_class):
                if (i, name, k) in filled:
                    reply, p_yes = filled[(i, name, k)]
                    line = {"prompt": list(p.conversation), "completion": reply, "response_type": rt.name,
                            "completion_label": name}
                    if graded:
                        line["propositions"] = {n: round(float(p_yes[index[n]]), 6) for n in graded}
                    out.append(line)
    if rm is not None and out:
        scores = rm([line["prompt"] for line in out], [line["completion"] for line in out])
        for line, score in zip(out, scores, strict=True):
            line["rm_score"] = round(float(score), 6)
    return out


def _bar(total: int, progress: Optional[bool]):
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="completion", desc="synth", disable=None if progress is None else not progress)
