"""Held-out comparisons: rewards per completion and ranking error rates.

A comparison line is one completion: `prompt`, `completion`, `response_type`
or `category`, `completion_label` (a label of that response type's `rank`, or
a class name), optional `rm_score`, optional `propositions` (P(yes) or
booleans; without them a grader grades the line). Lines with the same prompt
and response type form a group; within a group, every pair whose labels the
rank order separates is a (better, worse) pair, and a reward orders it wrongly
when the better completion does not score strictly higher (ties count as
errors, as in the method).

This is a small reader of its own (the fitting side's reader was not there when
this was written); it follows the same line shape and routing rule
(`data/records.py`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import diagnostics as dg
from ..data.jsonl import key_span, read_jsonl
from ..data.records import LINE_SHAPE, RecordError, completion_text, conversation_of, response_type_of
from ..errors import ConversationError, PathError
from ..policy import CompiledPolicy
from ..policy.format import canonical
from .inputs import MAX_REPORTED, BadLine, raise_bad_lines, require_file


@dataclass(frozen=True, eq=False)
class Comparisons:
    path: str
    lines: tuple[int, ...]
    response_types: tuple[str, ...]
    labels: tuple[str, ...]
    group_keys: tuple[str, ...]  # prompt + response type
    rm: np.ndarray = field(repr=False)  # [N], NaN where the line has no rm_score
    probs: np.ndarray = field(repr=False)  # [N, P] P(yes), NaN where not given (a grader fills them)
    given: np.ndarray = field(repr=False)  # [N, P] bool: a float P(yes) given on the line (calibrated like a grader's)
    conversations: tuple = field(default=(), repr=False)
    completions: tuple = field(default=(), repr=False)
    unrouted: int = 0  # lines whose category routes nowhere (no RBR reward): skipped

    def __len__(self) -> int:
        return len(self.lines)


def read_comparisons(policy: CompiledPolicy, path) -> Comparisons:
    path = require_file(path, "comparisons")
    index = {n: j for j, n in enumerate(policy.proposition_names)}
    rows, diags, unrouted = [], [], 0
    for number, text, row in read_jsonl(path):
        if isinstance(row, dg.Diagnostic):
            diags.append(row)
        else:
            try:
                parsed = _line(policy, row, index)
            except BadLine as exc:
                diags.append(dg.error(exc.code, key_span(str(path), number, text, exc.key), exc.message,
                                      exc.help or LINE_SHAPE + ', "completion_label": …'))
            else:
                if parsed is None:
                    unrouted += 1
                else:
                    rows.append((number, *parsed))
        if len(diags) >= MAX_REPORTED:
            break
    raise_bad_lines(diags, path)
    if not rows:
        raise PathError(path, "no comparison lines with a response type",
                        "give completions of prompts that route to a response type")
    n, p = len(rows), len(index)
    return Comparisons(
        str(path), tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows),
        tuple(r[3] for r in rows), np.array([r[4] for r in rows], dtype=float),
        np.array([r[5] for r in rows], dtype=float).reshape(n, p), np.array([r[6] for r in rows]).reshape(n, p),
        tuple(r[7] for r in rows), tuple(r[8] for r in rows), unrouted)


def _line(policy: CompiledPolicy, row: Any, index: dict):
    if not isinstance(row, dict):
        raise BadLine("E0301", "each line must be a JSON object")
    try:
        rt_name = response_type_of(policy, row)
        if rt_name is None:
            return None
        conv = conversation_of(row)
        comp = completion_text(row.get("completion"))
    except RecordError as exc:
        raise BadLine(exc.code, str(exc), exc.key, LINE_SHAPE)
    except ConversationError as exc:
        raise BadLine("E0301", str(exc), "completion", LINE_SHAPE)
    rt = policy.response_type(rt_name)
    label = row.get("completion_label")
    if not isinstance(label, str) or label not in (set(rt.labels) | set(rt.classes)):
        raise BadLine("E0301", f"`completion_label` {json.dumps(label)} is no label of response type `{rt.name}`",
                   "completion_label" if "completion_label" in row else None,
                   f"use one of {', '.join(rt.labels)}")
    rm = row.get("rm_score")
    if rm is None:
        rm = float("nan")
    elif isinstance(rm, bool) or not isinstance(rm, (int, float)) or not math.isfinite(rm):
        raise BadLine("E0301", f"`rm_score` is {json.dumps(rm)}; it must be a finite number", "rm_score")
    probs = np.full(len(index), np.nan)
    given = np.zeros(len(index), dtype=bool)
    props = row.get("propositions")
    if props is not None:
        if not isinstance(props, dict):
            raise BadLine("E0301", "`propositions` must be an object of P(yes) or labels", "propositions")
        for name, v in props.items():
            if name not in index:
                raise BadLine("E0301", f"`{name}` is no proposition of policy `{policy.name}`", "propositions")
            if not isinstance(v, bool) and not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
                raise BadLine("E0304", f"`{name}` is {json.dumps(v)}; give true, false or P(yes) in [0, 1]", name)
            probs[index[name]] = float(v)
            given[index[name]] = not isinstance(v, bool)
        missing = [p for p in rt.propositions if p not in props]
        if missing:
            raise BadLine("E0303", f"missing P(yes) for {', '.join(missing)}", "propositions",
                       "give every proposition of the response type, or no `propositions` and a --grader")
    return rt.name, label, canonical([row.get("prompt"), rt.name]), float(rm), probs, given, conv, comp


def better_than(policy: CompiledPolicy, response_type: str) -> dict[str, set[str]]:
    """label -> the labels it ranks above: the transitive closure of the `rank` chains."""
    rt = policy.response_type(response_type)
    above: dict[str, set[str]] = {lab: set() for lab in set(rt.labels) | set(rt.classes)}
    for chain in rt.ranks:
        for i, group in enumerate(chain):
            for later in chain[i + 1:]:
                for a in group:
                    above.setdefault(a, set()).update(later)
    changed = True
    while changed:  # a few labels: the plain fixpoint is enough
        changed = False
        for a in above:
            extra = set().union(*(above.get(b, set()) for b in above[a])) - above[a]
            if extra:
                above[a] |= extra
                changed = True
    return above


def pairs(policy: CompiledPolicy, data: Comparisons, rows: np.ndarray) -> list[tuple[int, int]]:
    """(better, worse) row pairs within each prompt group, among `rows`."""
    groups: dict[str, list[int]] = {}
    for i in rows:
        groups.setdefault(data.group_keys[i], []).append(int(i))
    out = []
    for members in groups.values():
        above = better_than(policy, data.response_types[members[0]])
        for a in members:
            for b in members:
                if data.labels[b] in above.get(data.labels[a], ()):
                    out.append((a, b))
    return out


def error_rate(rewards: np.ndarray, pair_list: list[tuple[int, int]]) -> Optional[float]:
    """Fraction of pairs where the better completion does not score strictly higher; None without pairs."""
    if not pair_list:
        return None
    a, b = np.array(pair_list).T
    return float(np.mean(~(rewards[a] > rewards[b])))


def centred(rewards: np.ndarray, data: Comparisons, rows: np.ndarray) -> np.ndarray:
    """Each reward minus the mean reward of its prompt group (the paper's per-prompt centring)."""
    out = np.array(rewards[rows], dtype=float)
    keys = [data.group_keys[i] for i in rows]
    for key in set(keys):
        mask = np.array([k == key for k in keys])
        out[mask] -= out[mask].mean()
    return out


def file_sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
