"""Comparison data: labelled completions of shared prompts, for fitting and
judging rewards (`rbrc fit`, `rbrc eval`).

One completion per JSON line:

    {"prompt": [messages], "completion": "…" or [assistant messages],
     "response_type": "…" or "category": "…",
     "completion_label": "<a rank label or class of that response type>",
     "rm_score": 1.25,                       optional, a finite number
     "propositions": {"apology": 0.93, …}}   optional, P(yes) or true/false

Lines with the same prompt (its canonical JSON) and response type form one
*group*. Within a group, every ordered pair of completions whose labels the
response type's rank order separates is a (better, worse) *pair*; peers (one
rank group) and unrelated labels are not compared. The rank order is the
transitive closure of the response type's `rank` chains (without `rank`, the
class order).

`read_comparisons` checks every line and raises one `DataError` naming all bad
lines; prompts that give no pair and response types with none are warnings,
and a file with no pair at all is an error: there is nothing to fit or judge.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .. import diagnostics as dg
from ..errors import DataError, PathError
from ..files import open_input
from ..policy import CompiledPolicy, ResponseType
from ..policy.format import canonical
from ..source import Span
from .jsonl import MAX_REPORTED, finite_number, key_span, read_jsonl, shown, stopped
from .probabilities import Given
from .records import LINE_SHAPE, LineError, read_line

SHAPE = LINE_SHAPE + ', "completion_label": "…", optional "rm_score" and "propositions"'
GROUP_WARNINGS = 10  # prompts without pairs named one by one; the rest in one summary
RM_LIMIT = 1e6  # |rm_score| above this is a unit mistake, not a reward model's score


@dataclass(frozen=True, eq=False)
class ComparisonData:
    """The routed lines of a comparison file, as parallel rows.

    `probs` holds P(yes) per policy proposition: given on the line (booleans as
    0/1), computed for `matches` propositions, NaN where a grader must fill it
    (`to_grade`). `given_soft` marks numbers given on the line (a grader's
    P(yes), calibrated like one); booleans are human labels and are not."""

    path: str
    sha256: str  # of the file's bytes: what weights.json records
    lines: tuple[int, ...]
    response_types: tuple[str, ...]
    labels: tuple[str, ...]
    groups: tuple[str, ...]  # canonical JSON of [prompt, response type]
    rm: np.ndarray = field(repr=False)  # [N], NaN where the line has no rm_score
    probs: np.ndarray = field(repr=False)  # [N, P]
    given_soft: np.ndarray = field(repr=False)  # [N, P] bool
    to_grade: np.ndarray = field(repr=False)  # [N] bool: the line has no `propositions`
    conversations: tuple = field(default=(), repr=False)
    completions: tuple = field(default=(), repr=False)
    warnings: tuple = ()  # Diagnostics: prompts or response types without pairs
    unrouted: int = 0  # lines whose category routes nowhere: no RBR reward, skipped

    def __len__(self) -> int:
        return len(self.lines)

    def rows(self, response_type: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.response_types, dtype=object) == response_type)

    def has_rm(self, rows: np.ndarray) -> bool:
        return bool(rows.size) and bool(np.isfinite(self.rm[rows]).all())

    @property
    def given(self) -> Given:
        """The lines' own P(yes) as `probabilities` takes them: the values, the
        numbers to calibrate as a grader's, the rows to grade."""
        return Given(self.probs, self.given_soft, self.to_grade)


@dataclass(frozen=True)
class RankOrder:
    """A response type's rank order over its labels: `above[i, j]` is true when
    label i ranks strictly above label j."""

    labels: tuple[str, ...]
    above: np.ndarray = field(repr=False)  # [L, L] bool

    def index(self, label: str) -> int:
        return self.labels.index(label)


def rank_order(rt: ResponseType) -> RankOrder:
    """The transitive closure of the `rank` chains; a class not in any chain is
    a label too (compared with nothing)."""
    labels = tuple(dict.fromkeys(tuple(rt.labels) + tuple(rt.classes)))
    at = {lab: i for i, lab in enumerate(labels)}
    above = np.zeros((len(labels), len(labels)), dtype=bool)
    for chain in rt.ranks:
        for i, group in enumerate(chain):
            for later in chain[i + 1:]:
                for a in group:
                    for b in later:
                        above[at[a], at[b]] = True
    for k in range(len(labels)):  # Floyd–Warshall on booleans: a few labels
        above |= above[:, [k]] & above[[k], :]
    return RankOrder(labels, above)


def ordered_pairs(group_ids: np.ndarray, label_ids: np.ndarray, above: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(better, worse) row indices of every pair within a group that the order
    separates. Vectorised: rows sorted by group, then one pass per offset up to
    the largest group, so 10^6 pairs take well under a second."""
    group_ids = np.asarray(group_ids, dtype=np.int64)
    label_ids = np.asarray(label_ids, dtype=np.int64)
    order = np.argsort(group_ids, kind="stable")
    g, lab = group_ids[order], label_ids[order]
    if g.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    sizes = np.bincount(np.unique(g, return_inverse=True)[1])
    better, worse = [], []
    for off in range(1, int(sizes.max())):
        i = np.arange(g.size - off)
        same = g[i] == g[i + off]
        i = i[same]
        j = i + off
        fwd = above[lab[i], lab[j]]
        back = above[lab[j], lab[i]]
        better += [order[i[fwd]], order[j[back]]]
        worse += [order[j[fwd]], order[i[back]]]
    if not better:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    b, w = np.concatenate(better), np.concatenate(worse)
    key = np.lexsort((w, b))  # a deterministic order, independent of the offsets
    return b[key].astype(np.int64), w[key].astype(np.int64)


def pairs_of(policy: CompiledPolicy, data: ComparisonData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(better, worse) indices into `data` among `rows` (all of one response type)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return rows, rows
    order = rank_order(policy.response_type(data.response_types[rows[0]]))
    _, group_ids = np.unique(np.asarray([data.groups[i] for i in rows], dtype=object), return_inverse=True)
    label_ids = np.array([order.index(data.labels[i]) for i in rows], dtype=np.int64)
    b, w = ordered_pairs(group_ids, label_ids, order.above)
    return rows[b], rows[w]


def error_rate(scores: np.ndarray, better: np.ndarray, worse: np.ndarray) -> Optional[float]:
    """Fraction of (better, worse) pairs a score orders wrongly, ties counted
    as errors; None without pairs."""
    if len(better) == 0:
        return None
    return float(np.mean(~(scores[better] > scores[worse])))


def read_comparisons(policy: CompiledPolicy, path, grader: bool = False) -> ComparisonData:
    """Every line checked. `grader`: lines without `propositions` will be graded
    (else each is an error). Raises `DataError` with all bad lines, or when the
    file gives no pair at all; `PathError` when it cannot be read."""
    path = Path(path)
    name = str(path)
    try:
        with open_input(path) as fh:  # never waits on a named pipe
            raw = fh.read()
    except IsADirectoryError:
        raise PathError(name, "is a folder", "give the comparisons as a JSON-lines file") from None
    except OSError as exc:
        raise PathError.from_os(name, exc, "cannot read") from None
    index = {n: j for j, n in enumerate(policy.proposition_names)}
    rows: list[tuple] = []
    diags: list[dg.Diagnostic] = []
    texts: dict[int, str] = {}
    unrouted = 0
    seen = 0
    quality: list[dg.Diagnostic] = []  # warnings on lines that are read: repeats, contradictions, overrides
    repeated: dict[str, int] = {}  # a line's canonical JSON -> where it first stood
    first_label: dict[tuple, tuple[int, str]] = {}  # (prompt, completion, P(yes)) -> (first line, its label)
    for number, text, record in read_jsonl(path):
        seen += 1
        if isinstance(record, dg.Diagnostic):
            diags.append(record)
            if len(diags) >= MAX_REPORTED:
                break
            continue
        try:
            parsed = _line(policy, record, index, grader)
        except LineError as exc:
            diags.append(exc.diagnostic(name, number, text, SHAPE))
            if len(diags) >= MAX_REPORTED:
                break
            continue
        if parsed is None:
            unrouted += 1
            continue
        texts[number] = text
        whole = canonical(record)
        if whole in repeated:  # the very same line again would count its pairs twice
            quality.append(dg.warning("W0313", key_span(name, number, text, None),
                                      f"the same line as line {repeated[whole]}: counted once",
                                      "remove the repeated line"))
            continue
        repeated[whole] = number
        for key in parsed[-1]:
            quality.append(dg.warning("W0314", key_span(name, number, text, key),
                                      f"`{key}` is a `matches` proposition: its pattern decides, not the given "
                                      f"value ({json.dumps(record['propositions'][key])}), which is not used",
                                      "leave `matches` propositions out of `propositions`"))
        # The same completion with the same given P(yes) has the same features: two labels
        # cannot both be right (given P(yes) that differ describe different gradings).
        same = (parsed[2], parsed[8], canonical(record.get("propositions")))
        labelled = first_label.setdefault(same, (number, parsed[1]))
        if labelled[1] != parsed[1]:
            quality.append(dg.warning("W0313", key_span(name, number, text, "completion_label"),
                                      f"the same prompt and completion as line {labelled[0]}, labelled "
                                      f"`{labelled[1]}` there and `{parsed[1]}` here: the fit cannot rank a "
                                      "completion against itself", "give the completion the one label it deserves"))
        rows.append((number, *parsed))
    source = {name: raw.decode("utf-8", errors=dg.LOSSY)}
    if not diags:
        diags += _rm_consistency(name, rows, texts)
    if diags:
        raise DataError(stopped(diags), source)
    if not rows:
        why = ("the file is empty" if not seen else
               f"none of its {seen} line{'s' * (seen != 1)} routes to a response type")
        raise DataError([dg.error("E0307", Span.point(name), f"no comparisons: {why}",
                                  "give completions of prompts that route to a response type, one per line: "
                                  + SHAPE)], source)
    n, p = len(rows), len(index)
    data = ComparisonData(
        path=name, sha256=hashlib.sha256(raw).hexdigest(), lines=tuple(r[0] for r in rows),
        response_types=tuple(r[1] for r in rows), labels=tuple(r[2] for r in rows),
        groups=tuple(r[3] for r in rows), rm=np.array([r[4] for r in rows], dtype=np.float64),
        probs=np.array([r[5] for r in rows], dtype=np.float64).reshape(n, p),
        given_soft=np.array([r[6] for r in rows], dtype=bool).reshape(n, p),
        to_grade=np.array([r[7] for r in rows], dtype=bool),
        conversations=tuple(r[8] for r in rows), completions=tuple(r[9] for r in rows), unrouted=unrouted)
    warnings, any_pairs = _pair_warnings(policy, data, texts)
    warnings = quality[:MAX_REPORTED] + warnings
    if not any_pairs:
        raise DataError(warnings + [dg.error(
            "E0310", Span.point(name), "no usable pairs: no prompt has two completions whose labels the rank "
            "order separates", "give each prompt several completions with labels of different ranks "
            "(a better and a worse one)")], source)
    return dataclasses.replace(data, warnings=tuple(warnings))


def _line(policy: CompiledPolicy, row: Any, index: Mapping[str, int], grader: bool):
    rt_name, conversation, completion = read_line(policy, row)
    if rt_name is None:
        return None  # the category routes nowhere: the reward model alone decides there
    rt = policy.response_type(rt_name)
    label = row.get("completion_label")
    known = tuple(dict.fromkeys(tuple(rt.labels) + tuple(rt.classes)))
    if label is None:
        raise LineError("E0305", "the line has no `completion_label`", None,
                   f"add the completion's label: one of {', '.join(known)}")
    if not isinstance(label, str) or label not in known:
        near = dg.closest(str(label), known)
        raise LineError("E0305", f"`completion_label` {json.dumps(label)} is no label of response type `{rt.name}`",
                   "completion_label", (f"did you mean `{near}`? " if near else "") + f"labels: {', '.join(known)}")
    rm = row.get("rm_score")
    if rm is None:
        rm = math.nan
    elif finite_number(rm) is None:
        raise LineError("E0306", f"`rm_score` is {shown(rm)}; it must be a finite number", "rm_score",
                   "give the reward model's score as a number, or leave `rm_score` out on every line")
    elif abs(rm) > RM_LIMIT:  # finite but beyond any reward model's scale: the losses would print as 300 digits
        raise LineError("E0306", f"`rm_score` is {rm:.6g}, beyond ±{RM_LIMIT:.0e}", "rm_score",
                        "give the reward model's raw score (scale it down if it is in other units)")
    probs = [math.nan] * len(index)
    soft = [False] * len(index)
    overridden: list[str] = []
    for prop in policy.propositions:  # deterministic propositions need no grader
        if not prop.graded:
            probs[index[prop.name]] = float(policy.matches(prop.name, completion))
    props = row.get("propositions")
    graded = [p for p in rt.propositions if policy.proposition(p).graded]
    to_grade = props is None and bool(graded)  # only `matches` propositions: nothing for a grader to do
    if to_grade and not grader:
        if graded:
            raise LineError("E0303", "the line has no `propositions`, and no grader is given to grade it", None,
                       f"give P(yes) for {', '.join(graded)} in `propositions`, or a grader (--grader MODEL)")
    if props is not None:
        if not isinstance(props, dict):
            raise LineError("E0301", "`propositions` must be an object of P(yes) or true/false", "propositions")
        for key, value in props.items():
            if key in index and not policy.proposition(key).graded:
                # The pattern decides a `matches` proposition, in fitting as in serving: a given value
                # that disagrees with it is reported (W0314) and not used.
                if isinstance(value, (bool, int, float)) and float(value) != probs[index[key]]:
                    overridden.append(key)
                continue
            if key not in index:
                near = dg.closest(key, index)
                raise LineError("E0301", f"`{key}` is no proposition of policy `{policy.name}`", key,
                           f"did you mean `{near}`?" if near else "use the policy's proposition names")
            if isinstance(value, bool):
                probs[index[key]] = float(value)
            elif finite_number(value) is not None and 0.0 <= value <= 1.0:
                probs[index[key]], soft[index[key]] = float(value), True
            else:
                raise LineError("E0304", f"`{key}` is {shown(value)}; give true, false or P(yes) in [0, 1]", key,
                           "a probability is a number between 0 and 1")
        missing = [p for p in rt.propositions if math.isnan(probs[index[p]])]
        if missing:
            raise LineError("E0303", f"missing P(yes) for {', '.join(missing)}", "propositions",
                       f"response type `{rt.name}` needs every proposition its classes use; or leave "
                       "`propositions` out and give a grader")
    group = canonical([row.get("prompt"), rt.name])
    return rt.name, label, group, float(rm), probs, soft, to_grade, conversation, completion, overridden


def _rm_consistency(name: str, rows: list, texts: dict) -> list:
    """An RM score on some lines of a response type and not others would mix
    two rewards: each line without one is an error then."""
    with_rm = {r[1] for r in rows if not math.isnan(r[4])}
    return [dg.error("E0306", key_span(name, r[0], texts[r[0]], None),
                     f"no `rm_score`, while other lines of response type `{r[1]}` give one",
                     "give every line of a response type an `rm_score`, or none of them")
            for r in rows if r[1] in with_rm and math.isnan(r[4])]


def _pair_warnings(policy: CompiledPolicy, data: ComparisonData, texts: dict) -> tuple[list, bool]:
    """W0308 for prompts that give no pair, W0309 for response types with none."""
    out: list[dg.Diagnostic] = []
    quiet: list[int] = []  # first lines of groups without pairs beyond GROUP_WARNINGS
    any_pairs = False
    name = data.path
    for rt_name in dict.fromkeys(data.response_types):
        rows = data.rows(rt_name)
        better, worse = pairs_of(policy, data, rows)
        any_pairs |= better.size > 0
        in_pair = set(better.tolist()) | set(worse.tolist())
        members: dict[str, list[int]] = {}
        for i in rows:
            members.setdefault(data.groups[i], []).append(int(i))
        paired_groups = {data.groups[i] for i in in_pair}
        for key, idx in members.items():
            if key in paired_groups:
                continue
            line = data.lines[idx[0]]
            if len(out) - sum(d.code == "W0309" for d in out) >= GROUP_WARNINGS:
                quiet.append(line)
                continue
            why = ("it has one completion" if len(idx) == 1 else
                   f"its {len(idx)} completions' labels ({', '.join(sorted({data.labels[i] for i in idx}))}) "
                   "are not ordered by the rank order")
            out.append(dg.warning("W0308", key_span(name, line, texts[line], "prompt"),
                                  f"this prompt gives no pair ({why}); its lines are not used",
                                  "give each prompt completions with labels of different ranks"))
        if better.size == 0:
            line = data.lines[rows[0]]
            out.append(dg.warning("W0309", key_span(name, line, texts[line], None),
                                  f"response type `{rt_name}` has no usable pairs: it gets no fitted weights",
                                  "give its prompts completions with labels of different ranks"))
    if quiet:
        first = quiet[0]
        out.append(dg.warning("W0308", key_span(name, first, texts[first], "prompt"),
                              f"{len(quiet)} more prompt{'s' * (len(quiet) != 1)} give no pair (from this line on)",
                              "give each prompt completions with labels of different ranks"))
    return out, any_pairs
