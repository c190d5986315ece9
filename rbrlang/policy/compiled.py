"""CompiledPolicy: a compiled folder, loaded and validated, for trainers.

Imports neither Lark nor the checker: a compiled policy is an artifact of its
own. Everything here works from `policy.json`'s rows (`format.PolicyDocument`)
and the templates; reading a folder, with its fitted files, is `loading.py`.
"""
from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from jinja2 import TemplateError

from ..diagnostics import did_you_mean, json_type
from ..errors import PolicyError
from . import logic, patterns, scoring
from .format import GRADER, MATCHES, POLICY_FILE, PolicyDocument
from .rendering import check_conversation, environment


@dataclass(frozen=True)
class Proposition:
    name: str
    kind: str  # "grader" or "matches"
    question: str = ""
    template: str = ""  # Jinja source, for grader propositions
    pattern: str = ""
    flags: str = ""
    instruct: str = ""  # what a generator is told makes it true (rbrc synth); "" = the question

    @property
    def graded(self) -> bool:
        """Answered by the grader model (a prompt); else a `matches` regex."""
        return self.kind == GRADER


@dataclass(frozen=True)
class ResponseType:
    name: str
    classes: tuple[str, ...]  # best to worst
    diagrams: tuple[logic.DecisionDiagram, ...]
    propositions: tuple[str, ...]  # feature propositions, in policy order
    features: tuple[str, ...]
    schema_hash: str
    ranks: tuple[tuple[tuple[str, ...], ...], ...]
    labels: tuple[str, ...]
    scores: tuple[float, ...]  # each class's reward before any fit, in class order (see `scoring.py`)


def normalise_name(name: str) -> str:
    """"Hard Refuse", "hard-refuse" and "hard_refuse" all name `hard_refuse`."""
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    description: str
    propositions: tuple[Proposition, ...]
    response_types: Mapping[str, ResponseType] = field(hash=False)
    class_order: tuple[str, ...]
    routes: Mapping[str, str] = field(hash=False)
    default_route: Optional[str]
    yes: tuple[str, ...]
    no: tuple[str, ...]
    source_sha256: str = ""
    # The grader block's chat turns: a system message, and the start of the answer
    # turn (an answer cue); "" for none. The grader's prompt encoder places them.
    system: str = ""
    prefill: str = ""
    # policy.json's rows, for tools that want what the loader does not keep (defines, formulas as written).
    document: Optional[PolicyDocument] = field(default=None, hash=False, repr=False, compare=False)
    # calibration.json's Platt maps of P(yes) (policy/calibration.py); None when absent.
    calibration: Optional[Any] = field(default=None, hash=False, repr=False, compare=False)
    # weights.json's fitted weights per response type (policy/weights.py); empty before `rbrc fit`.
    weights: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False, compare=False)

    # --- names -----------------------------------------------------------------
    @property
    def proposition_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.propositions)

    def proposition(self, name: str) -> Proposition:
        for p in self.propositions:
            if p.name == name:
                return p
        hint = _did_you_mean(name, self.proposition_names)
        raise PolicyError(f"no proposition `{name}` in policy `{self.name}`{hint}")

    def response_type(self, name: str) -> ResponseType:
        """By exact name, or case-insensitively with spaces and hyphens as `_`."""
        if name in self.response_types:
            return self.response_types[name]
        wanted = normalise_name(name)
        for key, rt in self.response_types.items():
            if normalise_name(key) == wanted:
                return rt
        known = ", ".join(self.response_types)
        raise PolicyError(f"unknown response type `{name}` (policy `{self.name}` has {known})"
                          + _did_you_mean(name, self.response_types))

    def route(self, category: str) -> Optional[str]:
        """The response type a request category gets; None: no RBR reward."""
        return self.routes.get(category, self.default_route)

    # --- routing one item: the one rule every door uses ------------------------------
    def route_item(self, response_type: Optional[str] = None, category: Optional[str] = None) -> Optional[str]:
        """The response type one item (a data line, a trainer's sample) is judged
        under, by its canonical name, or None (no route: no RBR reward).

        The rule: a `response_type` (any spelling `response_type()` accepts)
        wins; else the `category` goes through the routes (`route`); an item
        with neither has no route. Each door decides whether "neither" is a
        mistake (a data line: yes; an item of a trainer's batch: no).
        Raises PolicyError for an unknown response type or a value that is not
        a string; callers add where the item is (a line's field, "item i")."""
        if response_type is not None:
            if not isinstance(response_type, str):
                raise PolicyError(f"`response_type` must be a string, not {json_type(response_type)}")
            return self.response_type(response_type).name
        if category is not None:
            if not isinstance(category, str):
                raise PolicyError(f"`category` must be a string, not {json_type(category)}")
            return self.route(category)
        return None

    # --- prompts -----------------------------------------------------------------
    def render(self, proposition: str, conversation: Sequence[Mapping[str, str]], response: str) -> str:
        """The exact grader prompt, before the grader model's chat template."""
        prop = self.proposition(proposition)
        if not prop.graded:
            raise PolicyError(f"`{proposition}` is a `matches` proposition: it has no grader prompt")
        if not isinstance(response, str):
            raise PolicyError(f"the response must be a string, not {json_type(response)}")
        check_conversation(conversation)  # a string would otherwise render as one message per character
        try:
            return _compiled(prop.template).render(conversation=list(conversation), response=response)
        except (TemplateError, ArithmeticError, RecursionError, MemoryError) as exc:
            # The checker renders every template on samples (E0131); a branch only real data reaches
            # can still hit the sandbox's limits: the user's template, not a bug in rbrlang.
            raise PolicyError(f"the grader prompt of `{proposition}` cannot be rendered for this conversation "
                              f"({type(exc).__name__}: {exc}); simplify the proposition's template in the "
                              "`.rbr` source and recompile") from None

    def static_prefix(self, proposition: str) -> str:
        """The start of this proposition's prompt that no conversation or
        response changes: a grader computes it once and reuses it."""
        prop = self.proposition(proposition)
        if not prop.graded:
            raise PolicyError(f"`{proposition}` is a `matches` proposition: it has no grader prompt")
        return _static_prefix(prop.template)

    def matches(self, proposition: str, response: str) -> bool:
        """Whether a `matches` proposition holds. RE2 runs the pattern: time linear
        in the response whatever the pattern (see `patterns.py`)."""
        prop = self.proposition(proposition)
        if prop.graded:
            raise PolicyError(f"`{proposition}` is graded by a model, not matched")
        if not isinstance(response, str):
            raise PolicyError(f"the response must be a string, not {json_type(response)}")
        return patterns.search(_regex(prop), response)

    # --- classes and features ------------------------------------------------------
    def classify(self, response_type: str, labels: Mapping[str, bool]) -> str:
        """The one class that boolean proposition labels put a completion in."""
        rt = self.response_type(response_type)
        self._check_labels(labels)
        missing = [p for p in rt.propositions if p not in labels]
        if missing:
            raise PolicyError(f"missing proposition label{'s' * (len(missing) > 1)}: {', '.join(missing)}")
        holding = [c for c, dd in zip(rt.classes, rt.diagrams) if dd.evaluate(labels)]
        if len(holding) != 1:  # impossible for a checked policy
            raise PolicyError(f"labels put the completion in {len(holding)} classes")
        return holding[0]

    def _check_labels(self, labels) -> None:
        """Labels are True/False (or numpy booleans) keyed by this policy's propositions:
        `"no"` is truthy and 0.7 is not a label, so neither may pass silently."""
        if not isinstance(labels, Mapping):
            raise PolicyError(f"labels must be a mapping from proposition name to True or False, "
                              f"not {json_type(labels)}")
        names = set(self.proposition_names)
        unknown = [k for k in labels if k not in names]
        if unknown:
            first = unknown[0]
            more = f" (and {len(unknown) - 1} more: {', '.join(map(str, unknown[1:]))})" if len(unknown) > 1 else ""
            raise PolicyError(f"unknown proposition `{first}` in the labels{more}"
                              f"{_did_you_mean(first, self.proposition_names)} (policy `{self.name}` has "
                              f"{', '.join(self.proposition_names)})")
        numpy = sys.modules.get("numpy")  # numpy booleans are booleans; numpy itself is not needed
        for name, value in labels.items():
            if not (isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_))):
                raise PolicyError(f"the label of `{name}` is {value!r} ({json_type(value)}): "
                                  "labels are True or False")

    def _probabilities(self, probs):
        """P(yes) `[N, P]` as a floating tensor, checked: every value a probability.

        Floating tensors keep their dtype and device; bool and integer tensors
        become the default float dtype; anything else (numpy arrays, nested
        lists, of numbers or bools) becomes float64, as before. The check is
        one fused min/max reduction (one device sync); the bad entry is looked
        for only when there is one.
        """
        import torch

        n_props = len(self.propositions)
        if torch.is_tensor(probs):
            if probs.is_complex():
                raise PolicyError(f"probabilities must be real numbers, not {probs.dtype}")
            t = probs if probs.is_floating_point() else probs.to(torch.get_default_dtype())
        else:
            try:
                t = torch.as_tensor(probs, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise PolicyError(f"probabilities must be numbers (or booleans) in an [N, {n_props}] array "
                                  f"({exc}); {self._column_order()}") from None
        if t.dim() != 2 or t.shape[1] != n_props:
            hint = (f"; for one completion pass a batch of one, shape [1, {n_props}]"
                    if t.dim() == 1 and t.shape[0] == n_props else "")
            raise PolicyError(f"expected probabilities of shape [N, {n_props}], got {list(t.shape)}"
                              f"{hint}; {self._column_order()}")
        if t.numel():
            low, high = torch.aminmax(t)  # NaN propagates into both
            if not bool((low >= 0) & (high <= 1)):
                self._report_bad(t)
        return t

    def _column_order(self) -> str:
        return (f"one column per proposition, in policy order (`policy.proposition_names`): "
                f"{', '.join(self.proposition_names)}")

    def _report_bad(self, t):
        bad = ~((t >= 0) & (t <= 1))
        where = bad.nonzero()
        row, col = (int(v) for v in where[0].tolist())
        others = len(where) - 1
        more = f" (and {others} more value{'s' * (others > 1)} outside [0, 1])" if others else ""
        logits = "; if these are logits, apply `torch.sigmoid` first" if bool(t[bad].isfinite().any()) else ""
        raise PolicyError(f"probabilities[{row}, {col}] is {float(t[row, col]):.6g}, not a probability in [0, 1] "
                          f"(column {col} is proposition `{self.proposition_names[col]}`){more}{logits}")

    def _class_probabilities(self, rt: ResponseType, probs):
        import torch

        index = {n: i for i, n in enumerate(self.proposition_names)}
        columns = [probs[:, index[v]] for v in rt.diagrams[0].variables] if rt.diagrams else []
        n = probs.shape[0]
        cols = []
        for dd in rt.diagrams:
            value = dd.probability(columns)
            cols.append(value if torch.is_tensor(value) else torch.full((n,), float(value),
                                                                        dtype=probs.dtype, device=probs.device))
        out = torch.stack(cols, dim=1)
        total = out.sum(dim=1, keepdim=True)
        return out / torch.where(total > 0, total, torch.ones_like(total))

    def class_probabilities(self, response_type: str, probs):
        """Exact class probabilities `[N, C]` from P(yes) `[N, P]` (columns in
        `proposition_names` order), treating propositions as independent,
        normalised over the classes. Values outside [0, 1] or NaN are an error."""
        rt = self.response_type(response_type)
        return self._class_probabilities(rt, self._probabilities(probs))

    def features(self, response_type: str, probs):
        """`[N, F]` features in schema order: proposition P(yes), then class probabilities."""
        import torch

        rt = self.response_type(response_type)
        probs = self._probabilities(probs)
        index = {n: i for i, n in enumerate(self.proposition_names)}
        classes = self._class_probabilities(rt, probs)
        picked = probs[:, [index[p] for p in rt.propositions]].to(classes.dtype)
        return torch.cat([picked, classes], dim=1)

    # --- calibration ----------------------------------------------------------------
    def calibrate(self, probs):
        """`[N, P]` P(yes) through calibration.json's Platt maps (policy order);
        `probs` unchanged when the policy has no calibration. `features` and
        `class_probabilities` stay raw: callers calibrate explicitly, once."""
        return probs if self.calibration is None else self.calibration.apply(self.proposition_names, probs)

    # --- reward (the math is in scoring.py) -------------------------------------------
    def reward(self, response_type: str, features, rm_score=None):
        """`[N]` rewards from `[N, F]` features (as `features` returns them): with
        fitted weights `features @ w + bias`, before any fit the expected class
        score; plus `rm_score` `[N]` when given. See `policy/scoring.py`."""
        return scoring.reward(self, response_type, features, rm_score)


def _did_you_mean(name, known) -> str:
    """`; did you mean `x`?` (the one fuzzy matcher, shared with the compiler), or ""."""
    hint = did_you_mean(name, known)
    return f"; {hint}" if hint else ""


# Keyed by template source and bounded, so that a process loading many policies
# (a service reloading edited ones) does not grow without end.
@functools.lru_cache(maxsize=1024)
def _compiled(source: str):
    return environment().from_string(source)


@functools.lru_cache(maxsize=1024)
def _static_prefix(source: str) -> str:
    """What every rendering of a template starts with: the common start of two
    renderings that share no conversation or response."""
    tpl = _compiled(source)
    a = tpl.render(conversation=[{"role": "user", "content": "\x00a"}], response="\x00b")
    b = tpl.render(conversation=[{"role": "system", "content": "\x01c"}], response="\x01d")
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _regex(prop: Proposition):
    """The compiled RE2 regex (cached, bounded, in `patterns.compile_pattern`)."""
    try:
        return patterns.compile_pattern(prop.pattern, prop.flags)
    except PolicyError as exc:
        raise PolicyError(f"proposition `{prop.name}`: {exc}") from None


def from_document(doc: Union[PolicyDocument, Mapping[str, Any]], templates: Mapping[str, str],
                  where: str = POLICY_FILE) -> CompiledPolicy:
    """The CompiledPolicy of a document's rows (or of its JSON, checked first) and
    its templates (grader proposition -> Jinja source)."""
    if not isinstance(doc, PolicyDocument):
        doc = PolicyDocument.from_json(doc, where)
    missing = [p.name for p in doc.propositions if p.graded and p.name not in templates]
    if missing:
        raise PolicyError(f"{where}: no template for `{missing[0]}`; recompile the policy")
    props = tuple(Proposition(p.name, p.kind, p.question, templates[p.name], instruct=p.instruct) if p.graded else
                  Proposition(p.name, MATCHES, pattern=p.pattern, flags=p.flags) for p in doc.propositions)
    for prop in props:  # a pattern RE2 cannot run fails here, not in the middle of grading
        if not prop.graded:
            try:
                _regex(prop)
            except PolicyError as exc:
                raise PolicyError(f"{where}: {exc}; fix the pattern in the `.rbr` source and recompile "
                                  "(`rbrc check` points at it)") from None
    rts = {r.name: ResponseType(
        name=r.name, classes=r.class_names, diagrams=tuple(c.dd for c in r.classes), propositions=r.propositions,
        features=r.features, schema_hash=r.schema_hash, ranks=r.ranks, labels=r.labels,
        scores=(scoring.default_scores(len(r.classes)) if r.classes[0].score is None else
                tuple(float(c.score) for c in r.classes)))
        for r in doc.response_types}
    return CompiledPolicy(
        name=doc.policy, description=doc.description, propositions=props, response_types=rts,
        class_order=doc.class_order, routes=dict(doc.routes), default_route=doc.default_route,
        yes=doc.grader.yes, no=doc.grader.no, source_sha256=doc.source_sha256, system=doc.grader.system,
        prefill=doc.grader.prefill, document=doc)
