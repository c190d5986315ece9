"""`rbrc diff --data/--gold`: what a policy change does to real completions.

Every line is routed and classified under the old and the new policy (the
policies' own routing and `classify_record`; nothing here evaluates a class),
and the lines whose class or expected reward moves are counted per response
type and class pair, the largest moves listed.

Answers: a line's `propositions` are used as given where they still mean the
same under the new policy. Which do not depends on what they are:
- `--gold` holds human labels, answers to a proposition's *question*: a
  proposition whose question changed, or that the new policy adds, needs the grader;
- `--data` holds a grader's P(yes) (or labels) for a *prompt*: a proposition
  whose grader prompt changed (template, examples, the grader's yes/no words)
  needs the grader too.
`--data` may be `rbrc grade`'s output too: every P(yes), but no text to grade.
Only those propositions are graded, and only on the lines that need them (the
policy narrowed to them), through `data.probabilities` and the grader's grade
cache: a run repeated, or an item already graded under the same prompt, costs
nothing. `matches` propositions are always their pattern's.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import diagnostics as dg
from ..data.classify import classify_record
from ..data.jsonl import MAX_REPORTED, finite_number, read_jsonl, shown, stopped
from ..data.records import LineError, read_line, response_type_of
from ..errors import DataError, PolicyError, UsageError
from ..policy import CompiledPolicy

UNROUTED = "(no route)"
DIFF_SHAPE = ('a line reads {"prompt": [messages], "completion": "…", "category": "…" or "response_type": "…", '
              '"propositions": {name: true, false or P(yes)} (optional)}')


@dataclass(frozen=True)
class Line:
    number: int
    response_type: Optional[str]  # as the line names it (each policy resolves it its own way)
    category: Optional[str]
    conversation: list
    completion: Optional[str]  # None: a line of `rbrc grade`'s output, which keeps no text
    answers: dict  # proposition -> float (1/0 for labels), as the line gives them


@dataclass(frozen=True)
class Outcome:
    """One line under one policy."""

    response_type: Optional[str]  # None: no route
    cls: Optional[str]
    reward: Optional[float]  # the expected class score, Σ P(class) · score (before any fit)


@dataclass(frozen=True)
class Move:
    line: int
    category: Optional[str]
    completion: str
    old: Outcome
    new: Outcome

    @property
    def delta(self) -> Optional[float]:
        if self.old.reward is None or self.new.reward is None:
            return None
        return self.new.reward - self.old.reward

    @property
    def pair(self) -> str:
        """`hard_refuse: ideal → minimum_acceptable_style` (the response type named twice when it changes)."""
        a, b = self.old, self.new
        if (a.response_type, a.cls) == (b.response_type, b.cls):
            return f"{a.response_type}: {a.cls}" if a.response_type else UNROUTED
        if a.response_type == b.response_type:
            return f"{a.response_type}: {a.cls} → {b.cls}"
        return f"{_where(a)} → {_where(b)}"


def _where(o: Outcome) -> str:
    return f"{o.response_type}/{o.cls}" if o.response_type else UNROUTED


@dataclass(frozen=True)
class DataDiff:
    path: str
    lines: int
    moves: tuple[Move, ...]  # every line whose class or reward changes, in file order
    top: int
    graded: dict  # "old"/"new" -> propositions graded
    grader_stats: Optional[dict] = None  # (item, proposition) prompts graded by the model and served by the cache
    notes: tuple[str, ...] = ()

    @property
    def class_changes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.moves:
            if (m.old.response_type, m.old.cls) != (m.new.response_type, m.new.cls):
                counts[m.pair] = counts.get(m.pair, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def reward_only(self) -> int:
        return sum((m.old.response_type, m.old.cls) == (m.new.response_type, m.new.cls) for m in self.moves)

    def largest(self) -> list[Move]:
        moved = [m for m in self.moves if m.delta is not None and abs(m.delta) >= 5e-4]  # what 3 decimals show
        return sorted(moved, key=lambda m: (-abs(m.delta), m.line))[:self.top]

    def to_json(self) -> dict:
        def outcome(o: Outcome):
            return {"response_type": o.response_type, "class": o.cls, "reward": o.reward}

        return {"file": self.path, "lines": self.lines, "changed": len(self.moves),
                "class_changes": self.class_changes, "reward_only": self.reward_only,
                "largest": [{"line": m.line, "category": m.category, "old": outcome(m.old), "new": outcome(m.new),
                             "delta": m.delta} for m in self.largest()],
                "moves": [{"line": m.line, "old": outcome(m.old), "new": outcome(m.new)} for m in self.moves],
                "graded": self.graded, "grader": self.grader_stats, "notes": list(self.notes)}

    def text(self) -> str:
        changed = sum(1 for m in self.moves if (m.old.response_type, m.old.cls) != (m.new.response_type, m.new.cls))
        out = [f"on {self.path}: {self.lines} line{'s' * (self.lines != 1)}, {changed} change class, "
               f"{self.reward_only} change only their expected reward"]
        for pair, n in self.class_changes.items():
            out.append(f"  {n:5d}  {pair}")
        largest = self.largest()
        if largest:
            out.append(f"largest reward moves (top {len(largest)}):")
            for m in largest:
                text = " ".join((m.completion or "").split())
                text = text if len(text) <= 60 else text[:59] + "…"
                out.append(f"  line {m.line}: {m.old.reward:.3f} → {m.new.reward:.3f} ({m.delta:+.3f})  "
                           f"{m.pair}" + (f"  {text!r}" if m.completion is not None else ""))
        for which in ("old", "new"):
            if self.graded.get(which):
                out.append(f"asked of the grader under the {which} policy: {', '.join(self.graded[which])}")
        if self.grader_stats:
            s = self.grader_stats
            out.append(f"grader: {s['graded']} prompts graded, {s['cached']} from the grade cache")
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def read_lines(path: Path, old: CompiledPolicy, new: CompiledPolicy, gold: bool) -> list[Line]:
    """Every line checked against both policies; bad lines raised together as a DataError."""
    names = set(old.proposition_names) | set(new.proposition_names)
    lines, diags = [], []
    for number, text, row in read_jsonl(path):
        if isinstance(row, dg.Diagnostic):
            diags.append(row)
        else:
            try:
                lines.append(_line(old, new, names, row, number, gold))
            except LineError as exc:
                diags.append(exc.diagnostic(str(path), number, text, DIFF_SHAPE))
        if len(diags) >= MAX_REPORTED:
            break
    if diags:
        raise DataError(stopped(diags), {str(path): Path(path).read_text(encoding="utf-8", errors="replace")})
    if not lines:
        raise DataError([dg.error("E0301", dg.Span.point(str(path)), "the file has no lines to diff on",
                                  DIFF_SHAPE)], {})
    return lines


def _is_grade_output(row: Any) -> bool:
    """A line `rbrc grade -o` wrote: P(yes) per proposition, no conversation or completion."""
    return isinstance(row, dict) and "completion" not in row and {"line", "propositions", "classes"} <= set(row)


def _line(old, new, names, row: Any, number: int, gold: bool) -> Line:
    # A response type one version lacks is no route under that version (the line moves to or from
    # "no route"); one that neither has, or a field of the wrong type, is the line's mistake.
    graded_row = not gold and _is_grade_output(row)
    if graded_row and row.get("response_type") is None:  # graded, but routed nowhere: no reward either way
        row = dict(row, response_type=None)
    knows, unknown = [], []
    for policy in (old, new) if not graded_row or row.get("response_type") is not None else ():
        try:
            response_type_of(policy, row)
            knows.append(policy)
        except LineError as exc:
            if exc.code != "E0302":
                raise
            unknown.append(exc)
    if unknown and not knows:
        raise unknown[-1]
    if graded_row:  # `rbrc grade`'s output: its answers, no text (nothing can be graded again)
        conversation, completion = [], None
    else:
        _, conversation, completion = read_line(knows[0], row)
    answers = row.get("propositions", {})
    if answers is None:
        answers = {}
    if not isinstance(answers, dict):
        raise LineError("E0301", "`propositions` must be an object of answers", "propositions",
                        '"propositions": {"apology": true, …}')
    values = {}
    for name, v in answers.items():
        if name not in names:
            near = dg.did_you_mean(name, names)
            raise LineError("E0301", f"`{name}` is a proposition of neither policy", name,
                            near or "answer the policies' propositions")
        if isinstance(v, bool):
            values[name] = float(v)
        elif not gold and finite_number(v) is not None and 0 <= v <= 1:
            values[name] = float(v)
        else:
            raise LineError("E0304", f"answer `{name}` is {shown(v)}; "
                            + ("gold labels are true or false" if gold else
                               "answers are true, false or a P(yes) in [0, 1]"), name,
                            "a gold set holds human judgements" if gold else "use a boolean or a number in [0, 1]")
    return Line(number, row.get("response_type"), row.get("category"), conversation, completion, values)


def diff_on_data(old: CompiledPolicy, new: CompiledPolicy, path: Path, grader, *, prompt_changed: Sequence[str],
                 question_changed: Sequence[str], gold: bool, top: int = 10, flag: str = "--data") -> DataDiff:
    """Classify every line of `path` under both policies (see the module's docstring)."""
    lines = read_lines(path, old, new, gold)
    stale = set(question_changed if gold else prompt_changed)  # given answers that no longer hold under NEW
    before = _stats(grader)
    graded, outcomes = {}, {}
    for which, policy in (("old", old), ("new", new)):
        routes = [_route(policy, line) for line in lines]
        values, wanted = _answers(policy, lines, routes, stale if which == "new" else set())
        names = list(dict.fromkeys(n for w in wanted for n in w))
        if names:
            textless = [lines[k].number for k, w in enumerate(wanted) if w and lines[k].completion is None]
            if textless:
                raise UsageError(f"{flag} line {textless[0]} (of {len(textless)}) is `rbrc grade` output, which keeps "
                                 f"no text, and the {which} policy needs answers it does not give: "
                                 f"{_needed(names, wanted, prompt_changed, question_changed)}; diff on the "
                                 "data lines that were graded (they keep the conversation and completion)")
            if grader is None:
                raise UsageError(f"the {which} policy needs answers the lines of {flag} do not give: "
                                 f"{_needed(names, wanted, prompt_changed, question_changed)}; give --grader MODEL "
                                 "to grade them (only these are graded), or add them to the lines")
            _grade(policy, grader, lines, values, wanted, names)
            graded[which] = names
        outcomes[which] = [_outcome(policy, rt, vals) for rt, vals in zip(routes, values)]
    moves = tuple(Move(line.number, line.category, line.completion, a, b)
                  for line, a, b in zip(lines, outcomes["old"], outcomes["new"]) if _moved(a, b))
    after = _stats(grader)
    stats = None if grader is None else {k: after[k] - before[k] for k in after}
    return DataDiff(str(path), len(lines), moves, top, graded, stats)


def _needed(names, wanted, prompt_changed, question_changed) -> str:
    """`question changed: disclaimer (4 lines); no answer on 6 lines: apology, judgement, … (16)`."""
    groups: dict[str, list] = {}
    for n in names:
        why = ("its question changed" if n in question_changed else
               "its grader prompt changed" if n in prompt_changed else "no answer on the line")
        groups.setdefault(why, []).append(n)
    parts = []
    for why, group in groups.items():
        lines = sum(any(n in w for n in group) for w in wanted)
        shown = ", ".join(f"`{n}`" for n in group[:4]) + (f", … ({len(group)} in all)" if len(group) > 4 else "")
        parts.append(f"{shown} ({why}; {lines} line{'s' * (lines != 1)})")
    return "; ".join(parts)


def _route(policy: CompiledPolicy, line: Line) -> Optional[str]:
    try:
        return policy.route_item(line.response_type, line.category)
    except PolicyError:  # a response type this version does not have (`_line` checked the other has it)
        return None


def _moved(a: Outcome, b: Outcome) -> bool:
    if (a.response_type, a.cls) != (b.response_type, b.cls) or (a.reward is None) != (b.reward is None):
        return True
    return a.reward is not None and abs(a.reward - b.reward) > 1e-12


def _answers(policy: CompiledPolicy, lines: Sequence[Line], routes, stale: set):
    """Each line's answers under `policy`, and the graded propositions each line still needs."""
    values, wanted = [], []
    for line, rt in zip(lines, routes):
        vals, want = {}, []
        for name in (policy.response_type(rt).propositions if rt is not None else ()):
            if not policy.proposition(name).graded and line.completion is not None:
                vals[name] = float(policy.matches(name, line.completion))  # the pattern decides
            elif name in line.answers and name not in stale:
                vals[name] = line.answers[name]
            else:
                want.append(name)
        values.append(vals)
        wanted.append(want)
    return values, wanted


def _grade(policy: CompiledPolicy, grader, lines: Sequence[Line], values: list, wanted: list, names: list) -> None:
    """Grade only `names`, only on the lines that want them: the policy narrowed to those propositions."""
    from ..data.probabilities import probabilities

    alone = replace(policy, propositions=tuple(policy.proposition(n) for n in names))
    rows = [k for k, w in enumerate(wanted) if w]
    p = probabilities(alone, grader, [lines[k].conversation for k in rows], [lines[k].completion for k in rows],
                      calibration=None, progress=None, desc="grading changed propositions").p_yes
    for i, k in enumerate(rows):
        for j, name in enumerate(names):
            if name in wanted[k]:
                values[k][name] = float(p[i, j])


def _outcome(policy: CompiledPolicy, rt: Optional[str], values: dict) -> Outcome:
    if rt is None:
        return Outcome(None, None, None)
    record = {"response_type": rt, "propositions": {n: (v == 1.0) if v in (0.0, 1.0) else v
                                                   for n, v in values.items()}}
    got = classify_record(policy, record)
    scores = dict(zip(policy.response_type(rt).classes, policy.response_type(rt).scores))
    # Before any fit a completion's reward is its expected class score (policy/scoring.py);
    # a diff compares policies as written, never a fit.
    return Outcome(rt, got.cls, float(sum(p * scores[c] for c, p in got.classes.items())))


def _stats(grader) -> dict:
    s = getattr(grader, "stats", None)
    return {"graded": getattr(s, "graded", 0), "cached": getattr(s, "cached", 0)}
