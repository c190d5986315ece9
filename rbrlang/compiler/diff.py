"""`rbrc diff`'s structure: what changed between two versions of a policy.

Propositions, defines, classes, scores, features, ranks and routes added,
removed or changed, and each response type's schema hash (weights fitted for
an old hash stop loading). A class formula is compared by meaning, not by
spelling: both decision diagrams are rebuilt in one BDD space over the two
policies' propositions, where equal functions are the same node, so a
rewritten formula that means the same reads "rewritten", not "changed".

The diff on data (which completions change class or reward) is
`evaluate/policy_diff.py`; it starts from `PolicyDiff.regrade`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import PolicyError
from ..policy import logic
from ..policy.compiled import CompiledPolicy
from .proofs import Space


@dataclass(frozen=True)
class Change:
    kind: str  # "added", "removed" or "changed"
    what: str  # "proposition", "define", "class", "route", …
    name: str
    detail: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "what": self.what, "name": self.name, "detail": self.detail}


@dataclass(frozen=True)
class ResponseDiff:
    name: str
    changes: tuple[Change, ...]
    old_hash: str
    new_hash: str

    @property
    def hash_changed(self) -> bool:
        return self.old_hash != self.new_hash


@dataclass(frozen=True)
class PolicyDiff:
    old: str  # the policies' names
    new: str
    changes: tuple[Change, ...]  # policy-wide: propositions, defines, class order, routes, grader
    responses: tuple[ResponseDiff, ...]  # response types in both
    # Graded propositions whose grader prompt differs (template, or the grader's yes/no words):
    # answers given for the old prompt do not hold for the new one.
    prompt_changed: tuple[str, ...] = ()
    question_changed: tuple[str, ...] = ()  # ... of those, the ones whose question itself differs
    added_propositions: tuple[str, ...] = ()
    common_response_types: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.changes and not any(r.changes or r.hash_changed for r in self.responses)

    def to_json(self) -> dict:
        return {"old": self.old, "new": self.new, "changes": [c.to_json() for c in self.changes],
                "response_types": [{"name": r.name, "changes": [c.to_json() for c in r.changes],
                                    "schema_hash": {"old": r.old_hash, "new": r.new_hash,
                                                    "changed": r.hash_changed}} for r in self.responses],
                "prompt_changed": list(self.prompt_changed), "question_changed": list(self.question_changed),
                "added_propositions": list(self.added_propositions)}

    def text(self) -> str:
        lines = [f"policy {self.old} → {self.new}" if self.old != self.new else f"policy {self.new}"]
        if self.empty:
            return "\n".join(lines + ["  no changes"]) + "\n"
        for c in self.changes:
            lines.append(_line(c, "  "))
        for r in self.responses:
            if not r.changes and not r.hash_changed:
                lines.append(f"response {r.name}: unchanged")
                continue
            lines.append(f"response {r.name}:")
            lines += [_line(c, "  ") for c in r.changes]
            if r.hash_changed:
                lines.append(f"  schema hash {r.old_hash[:12]} → {r.new_hash[:12]}: weights fitted for the old "
                             "policy stop loading (refit with `rbrc fit`)")
            else:
                lines.append("  schema hash unchanged: fitted weights still load")
        return "\n".join(lines) + "\n"


def _line(c: Change, indent: str) -> str:
    mark = {"added": "+", "removed": "-", "changed": "~"}[c.kind]
    detail = f": {c.detail}" if c.detail else ""
    return f"{indent}{mark} {c.what}{' ' + c.name if c.name else ''}{detail}"


def _added_removed(what: str, old, new) -> list[Change]:
    return [Change("removed", what, n) for n in old if n not in new] + \
           [Change("added", what, n) for n in new if n not in old]


def structure_diff(old: CompiledPolicy, new: CompiledPolicy) -> PolicyDiff:
    """Every difference between two compiled policies. Raises PolicyError when
    they share no response type: then they are not two versions of one policy."""
    common = tuple(n for n in new.response_types if n in old.response_types)
    if not common:
        raise PolicyError(f"`{old.name}` and `{new.name}` have no response type in common (old: "
                          f"{', '.join(old.response_types) or 'none'}; new: {', '.join(new.response_types) or 'none'}); "
                          "diff two versions of one policy")
    changes: list[Change] = []
    if old.name != new.name:
        changes.append(Change("changed", "policy name", new.name, f"was {old.name}"))
    if old.description != new.description:
        changes.append(Change("changed", "policy", "description"))
    if (old.yes, old.no) != (new.yes, new.no):
        changes.append(Change("changed", "grader", "answers", f"yes {list(old.yes)} no {list(old.no)} → "
                                                              f"yes {list(new.yes)} no {list(new.no)}"))
    old_props = {p.name: p for p in old.propositions}
    new_props = {p.name: p for p in new.propositions}
    changes += _added_removed("proposition", old_props, new_props)
    prompt_changed, question_changed = [], []
    for name, p in new_props.items():
        q = old_props.get(name)
        if q is None:
            continue
        parts = []
        if p.kind != q.kind:
            parts.append(f"was a {'graded' if q.graded else 'matches'} proposition")
        elif p.graded:
            if p.question != q.question:
                parts.append("question changed")
                question_changed.append(name)
            elif p.template != q.template:
                parts.append("grader prompt changed (template or examples)")
            if p.template != q.template or (old.yes, old.no) != (new.yes, new.no):
                prompt_changed.append(name)  # what the grade cache keys on: another prompt, another answer
        elif (p.pattern, p.flags) != (q.pattern, q.flags):
            parts.append(f"pattern /{q.pattern}/{q.flags} → /{p.pattern}/{p.flags}")
        if parts:
            changes.append(Change("changed", "proposition", name, "; ".join(parts)))
        if p.kind != q.kind and p.graded:
            prompt_changed.append(name)
    old_defs, new_defs = _defines(old), _defines(new)
    changes += _added_removed("define", old_defs, new_defs)
    changes += [Change("changed", "define", n, _formula_change(old_defs[n], f))
                for n, f in new_defs.items() if n in old_defs and old_defs[n] != f]
    if old.class_order != new.class_order:
        changes.append(Change("changed", "classes", "order", f"{' > '.join(old.class_order)} → "
                                                             f"{' > '.join(new.class_order)}"))
    changes += _route_changes(old, new)
    for name in old.response_types:
        if name not in new.response_types:
            changes.append(Change("removed", "response", name))
    for name in new.response_types:
        if name not in old.response_types:
            changes.append(Change("added", "response", name))
    space = Space(tuple(dict.fromkeys(old.proposition_names + new.proposition_names)))
    responses = tuple(_response_diff(space, old, new, name) for name in common)
    added = tuple(n for n in new_props if n not in old_props and new_props[n].graded)
    return PolicyDiff(old.name, new.name, tuple(changes), responses, tuple(prompt_changed), tuple(question_changed),
                      added, common)


def _defines(policy: CompiledPolicy) -> dict[str, logic.Formula]:
    doc = policy.document
    return {d.name: d.expr for d in doc.defines} if doc is not None else {}


def _route_changes(old: CompiledPolicy, new: CompiledPolicy) -> list[Change]:
    out = []
    for cat in dict.fromkeys(list(old.routes) + list(new.routes)):
        a, b = old.routes.get(cat), new.routes.get(cat)
        if a == b:
            continue
        if a is None:
            out.append(Change("added", "route", repr(cat), f"→ {b}"))
        elif b is None:
            fallback = f" (now the default, {new.default_route})" if new.default_route else " (now unrouted)"
            out.append(Change("removed", "route", repr(cat), f"was → {a}{fallback}"))
        else:
            out.append(Change("changed", "route", repr(cat), f"→ {a} became → {b}"))
    if old.default_route != new.default_route:
        out.append(Change("changed", "route", "default", f"{old.default_route} → {new.default_route}"))
    return out


def _response_diff(space: Space, old: CompiledPolicy, new: CompiledPolicy, name: str) -> ResponseDiff:
    a, b = old.response_types[name], new.response_types[name]
    changes = _added_removed("class", a.classes, b.classes)
    if [c for c in a.classes if c in b.classes] != [c for c in b.classes if c in a.classes]:
        changes.append(Change("changed", "class", "order", f"{' > '.join(a.classes)} → {' > '.join(b.classes)}"))
    old_dd, new_dd = dict(zip(a.classes, a.diagrams)), dict(zip(b.classes, b.diagrams))
    old_expr, new_expr = _class_formulas(old, name), _class_formulas(new, name)
    for cls in b.classes:
        if cls not in old_dd:
            continue
        u, v = space.from_diagram(old_dd[cls]), space.from_diagram(new_dd[cls])
        if u != v:  # one BDD space: equal functions are one node
            care = tuple(dict.fromkeys(a.propositions + b.propositions))
            parts = [f"{how} {_answers(space.example(w, care))}"
                     for how, w in (("now also holds for", v & ~u), ("no longer holds for", u & ~v))
                     if w != space.false]
            changes.append(Change("changed", "class", cls, "; ".join(parts)))
        elif old_expr.get(cls) != new_expr.get(cls):
            changes.append(Change("changed", "class", cls, "rewritten; the same answers give it"))
    old_scores, new_scores = dict(zip(a.classes, a.scores)), dict(zip(b.classes, b.scores))
    moved = [f"{c} {old_scores[c]:g} → {new_scores[c]:g}" for c in b.classes
             if c in old_scores and old_scores[c] != new_scores[c]]
    if moved:
        changes.append(Change("changed", "scores", "", ", ".join(moved)))
    changes += _added_removed("feature", a.features, b.features)
    changes += [Change("changed", "feature", p, "its grader prompt changed") for p in b.propositions
                if p in a.propositions and _prompt(old, p) != _prompt(new, p)]
    if a.ranks != b.ranks:
        changes.append(Change("changed", "rank", "", f"{_ranks(a.ranks)} → {_ranks(b.ranks)}"))
    return ResponseDiff(name, tuple(changes), a.schema_hash, b.schema_hash)


def _prompt(policy: CompiledPolicy, name: str) -> tuple:
    """What a proposition's answers depend on (what the grade cache keys on, and the schema hash)."""
    p = policy.proposition(name)
    return (p.kind, p.template, policy.yes, policy.no) if p.graded else (p.kind, p.pattern, p.flags)


def _answers(example: dict) -> str:
    """One assignment, as a test would give it: `yes a, b (the rest no)`."""
    yes = [k for k, v in example.items() if v]
    return f"yes {', '.join(yes)} (the rest no)" if yes else "every answer no"


def formula_text(f) -> str:
    """A formula as the language writes it, with parentheses only where `or` sits inside `and`."""
    if isinstance(f, logic.Ref):
        return f.name
    if isinstance(f, logic.Not):
        inner = formula_text(f.operand)
        return f"not {inner}" if isinstance(f.operand, (logic.Ref, logic.Not)) else f"not ({inner})"
    if isinstance(f, logic.And):
        return " and ".join(f"({formula_text(g)})" if isinstance(g, logic.Or) else formula_text(g)
                            for g in f.operands)
    return " or ".join(formula_text(g) for g in f.operands)


def _class_formulas(policy: CompiledPolicy, response: str) -> dict[str, Optional[logic.Formula]]:
    doc = policy.document
    if doc is None:
        return {}
    row = next(r for r in doc.response_types if r.name == response)
    return {c.name: c.expr for c in row.classes}


def _formula_change(old: logic.Formula, new: logic.Formula) -> str:
    """`a and b → a and c`, or, for formulas too long to read side by side, the names it stops and starts using."""
    a, b = formula_text(old), formula_text(new)
    if len(a) + len(b) <= 150:
        return f"{a} → {b}"
    before, after = logic.variables(old), logic.variables(new)  # names as written: propositions and defines
    parts = [f"no longer uses {', '.join(sorted(before - after))}"] * bool(before - after)
    parts += [f"now uses {', '.join(sorted(after - before))}"] * bool(after - before)
    return "; ".join(parts) or "rewritten"


def _short(text: str, limit: int = 160) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[:limit - 1] + "…"


def _ranks(ranks) -> str:
    return " | ".join(" > ".join("{" + ", ".join(g) + "}" if len(g) > 1 else g[0] for g in chain) for chain in ranks)
