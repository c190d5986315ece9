"""Reading a gold set and its P(yes): human labels in, arrays out, bad lines located.

A gold line is a data line (`prompt`, `completion`, `response_type` or
`category`) with `propositions` holding the human labels, true or false. The
grader's P(yes) for it comes from a grader run here, or from a probabilities
file: one JSON line per gold line with `propositions` {name: P(yes)} (what
`rbrc grade` writes; its `line` field, when present, names the gold line).
"""
from __future__ import annotations

import hashlib

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import diagnostics as dg
from ..data.jsonl import MAX_REPORTED, finite_number, key_span, read_jsonl, shown, stopped
from ..data.records import LineError, read_line, response_type_of
from ..errors import DataError, PathError
from ..policy import CompiledPolicy
from ..policy.format import canonical

GOLD_SHAPE = ('a gold line reads {"prompt": …, "completion": …, "response_type": …, '
              '"propositions": {name: true or false}}')
PROBS_SHAPE = 'a line reads {"line": GOLD LINE, "propositions": {name: P(yes)}}'


@dataclass(frozen=True, eq=False)
class GoldSet:
    path: str
    lines: tuple[int, ...]  # line numbers in the gold file
    response_types: tuple[Optional[str], ...]  # None: the category routes nowhere
    prompt_keys: tuple[str, ...]  # canonical JSON of the prompt: rows of one prompt share a split
    labels: np.ndarray = field(repr=False)  # [N, P] 1.0 / 0.0, NaN where the line has no label
    conversations: tuple = field(default=(), repr=False)  # only when a grader will grade them
    completions: tuple = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.lines)


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise PathError(path, "no such file", f"give the {what} as JSON lines")
    if not path.is_file():
        raise PathError(path, "not a file", f"give the {what} as JSON lines")
    return path


def file_sha256(path) -> str:
    """What fitted files record of the data they were fitted on."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def raise_bad_lines(diags: list, path: Path) -> None:
    if diags:
        text = path.read_text(encoding="utf-8", errors=dg.LOSSY)
        raise DataError(stopped(diags), {str(path): text})


def read_gold(policy: CompiledPolicy, path, with_texts: bool = False) -> GoldSet:
    """Every gold line checked; all bad lines (up to MAX_REPORTED) raised together as a DataError."""
    path = require_file(path, "gold set")
    names = policy.proposition_names
    index = {n: j for j, n in enumerate(names)}
    lines, rts, keys, labels, convs, comps, diags = [], [], [], [], [], [], []
    for number, text, row in read_jsonl(path):
        if isinstance(row, dg.Diagnostic):
            diags.append(row)
        else:
            try:
                rt, key, values, conv, comp = _gold_line(policy, row, index, with_texts)
            except LineError as exc:
                diags.append(exc.diagnostic(str(path), number, text, GOLD_SHAPE))
            else:
                lines.append(number), rts.append(rt), keys.append(key), labels.append(values)
                convs.append(conv), comps.append(comp)
        if len(diags) >= MAX_REPORTED:
            break
    raise_bad_lines(diags, path)
    if not lines:
        raise PathError(path, "no gold lines", "the gold set needs at least one labelled completion per line")
    return GoldSet(str(path), tuple(lines), tuple(rts), tuple(keys), np.array(labels, dtype=float).reshape(
        len(lines), len(names)), tuple(convs) if with_texts else (), tuple(comps) if with_texts else ())


def _gold_line(policy, row: Any, index: dict, with_texts: bool):
    if not isinstance(row, dict):
        raise LineError("E0301", "each gold line must be a JSON object")
    rt = response_type_of(policy, row)
    labels = row.get("propositions")
    if not isinstance(labels, dict):
        raise LineError("E0303" if labels is None else "E0301",
                   "the gold line has no `propositions`" if labels is None else "`propositions` must be an object",
                   "propositions" if labels is not None else None,
                   'add the human labels: "propositions": {"apology": true, …}')
    values = np.full(len(index), np.nan)
    for name, v in labels.items():
        if name not in index:
            raise LineError("E0301", f"`{name}` is no proposition of policy `{policy.name}`", "propositions")
        if not isinstance(v, bool):
            raise LineError("E0304", f"label `{name}` is {json.dumps(v)}; gold labels are true or false",
                       name, "a gold set holds human judgements: true or false")
        values[index[name]] = float(v)
    if rt is not None:
        missing = [p for p in policy.response_type(rt).propositions if p not in labels]
        if missing:
            raise LineError("E0303", f"missing label{'s' * (len(missing) > 1)} for {', '.join(missing)}", "propositions",
                       f"response type `{rt}` needs every proposition its classes use")
    prompt = row.get("prompt")
    key = canonical(prompt) if prompt is not None else canonical(row.get("completion"))
    conv = comp = None
    if with_texts:
        _, conv, comp = read_line(policy, row)
    return rt, key, values, conv, comp


def read_probabilities(policy: CompiledPolicy, path, gold: GoldSet) -> np.ndarray:
    """`[N, P]` P(yes) for the gold lines, from a probabilities file (NaN where a
    proposition is not given; every label the gold line has needs a probability)."""
    path = require_file(path, "probabilities")
    names = policy.proposition_names
    index = {n: j for j, n in enumerate(names)}
    rows: list[tuple[int, Optional[int], np.ndarray, str]] = []  # (line, gold line named, values, text)
    diags = []
    for number, text, row in read_jsonl(path):
        if isinstance(row, dg.Diagnostic):
            diags.append(row)
        else:
            try:
                rows.append((number, *_prob_line(policy, row, index), text))
            except LineError as exc:
                diags.append(exc.diagnostic(str(path), number, text, PROBS_SHAPE))
        if len(diags) >= MAX_REPORTED:
            break
    raise_bad_lines(diags, path)
    by_line = all(named is not None for _, named, _, _ in rows)
    position = {line: i for i, line in enumerate(gold.lines)}
    out = np.full((len(gold), len(names)), np.nan)
    seen = np.zeros(len(gold), dtype=bool)
    if by_line:  # `rbrc grade` output: each row names its gold line
        for number, named, values, text in rows:
            i = position.get(named)
            if i is None:
                diags.append(dg.error("E0301", key_span(str(path), number, text, "line"),
                                      f"line {named} of {gold.path} is no gold line",
                                      "grade the same file you give as --gold"))
                continue
            out[i], seen[i] = values, True
    else:  # one row per gold line, in order
        if len(rows) != len(gold):
            raise PathError(path, f"{len(rows)} probability lines for {len(gold)} gold lines in {gold.path}",
                            "give one line per gold line, in order, or a `line` field naming the gold line")
        for i, (_, _, values, _) in enumerate(rows):
            out[i], seen[i] = values, True
    raise_bad_lines(diags, path)
    if not seen.all():
        first = gold.lines[int(np.flatnonzero(~seen)[0])]
        raise PathError(path, f"no probabilities for {int((~seen).sum())} gold lines (the first is line {first} "
                        f"of {gold.path})", "grade every gold line (`rbrc grade` without --keep-going)")
    lacking = ~np.isnan(gold.labels) & np.isnan(out)
    if lacking.any():
        i, j = (int(v[0]) for v in np.nonzero(lacking))
        raise PathError(path, f"no P(yes) for `{names[j]}`, which line {gold.lines[i]} of {gold.path} labels",
                        "give a probability for every labelled proposition")
    return out


def _prob_line(policy, row: Any, index: dict):
    if not isinstance(row, dict):
        raise LineError("E0301", "each line must be a JSON object")
    named = row.get("line")
    if named is not None and (isinstance(named, bool) or not isinstance(named, int)):
        raise LineError("E0301", "`line` must be the gold line's number", "line")
    probs = row.get("propositions")
    if not isinstance(probs, dict):
        raise LineError("E0303" if probs is None else "E0301",
                   "the line has no `propositions`" if probs is None else "`propositions` must be an object",
                   "propositions" if probs is not None else None)
    values = np.full(len(index), np.nan)
    for name, v in probs.items():
        if name not in index:
            raise LineError("E0301", f"`{name}` is no proposition of policy `{policy.name}`", "propositions")
        if isinstance(v, bool):
            v = float(v)
        if finite_number(v) is None or not 0.0 <= v <= 1.0:
            raise LineError("E0304", f"P(yes) of `{name}` is {shown(v)}; a probability is a number in [0, 1]",
                       name, "give P(yes) between 0 and 1")
        values[index[name]] = float(v)
    return named, values
