"""CompiledPolicy: a compiled folder, loaded and validated, for trainers.

Imports neither Lark nor the checker: a compiled policy is an artifact of its
own. Everything here works from `policy.json` and `templates/`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..errors import PolicyError
from . import logic
from .format import FORMAT_VERSION, POLICY_FILE, read_document
from .rendering import environment

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@dataclass(frozen=True)
class Proposition:
    name: str
    kind: str  # "grader" or "matches"
    question: str = ""
    template: str = ""  # Jinja source, for grader propositions
    pattern: str = ""
    flags: str = ""


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
    document: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False, compare=False)

    # --- names -----------------------------------------------------------------
    @property
    def proposition_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.propositions)

    def proposition(self, name: str) -> Proposition:
        for p in self.propositions:
            if p.name == name:
                return p
        raise PolicyError(f"no proposition `{name}` in policy `{self.name}`")

    def response_type(self, name: str) -> ResponseType:
        """By exact name, or case-insensitively with spaces and hyphens as `_`."""
        if name in self.response_types:
            return self.response_types[name]
        wanted = normalise_name(name)
        for key, rt in self.response_types.items():
            if normalise_name(key) == wanted:
                return rt
        known = ", ".join(self.response_types)
        raise PolicyError(f"unknown response type `{name}` (policy `{self.name}` has {known})")

    def route(self, category: str) -> Optional[str]:
        """The response type a request category gets; None: no RBR reward."""
        return self.routes.get(category, self.default_route)

    # --- prompts -----------------------------------------------------------------
    def render(self, proposition: str, conversation: Sequence[Mapping[str, str]], response: str) -> str:
        """The exact grader prompt, before the grader model's chat template."""
        prop = self.proposition(proposition)
        if prop.kind != "grader":
            raise PolicyError(f"`{proposition}` is a `matches` proposition: it has no grader prompt")
        if not isinstance(response, str):
            raise PolicyError(f"the response must be a string, not {type(response).__name__}")
        return _compiled(prop.template).render(conversation=list(conversation), response=response)

    def static_prefix(self, proposition: str) -> str:
        """The start of this proposition's prompt that no conversation or
        response changes: a grader computes it once and reuses it."""
        key = self.proposition(proposition).template
        if key not in _static:
            a = self.render(proposition, [{"role": "user", "content": "\x00a"}], "\x00b")
            b = self.render(proposition, [{"role": "system", "content": "\x01c"}], "\x01d")
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            _static[key] = a[:n]
        return _static[key]

    def matches(self, proposition: str, response: str) -> bool:
        prop = self.proposition(proposition)
        if prop.kind != "matches":
            raise PolicyError(f"`{proposition}` is graded by a model, not matched")
        return _regex(prop.pattern, prop.flags).search(response) is not None

    # --- classes and features ------------------------------------------------------
    def classify(self, response_type: str, labels: Mapping[str, bool]) -> str:
        """The one class that boolean proposition labels put a completion in."""
        rt = self.response_type(response_type)
        missing = [p for p in rt.propositions if p not in labels]
        if missing:
            raise PolicyError(f"missing proposition label{'s' * (len(missing) > 1)}: {', '.join(missing)}")
        holding = [c for c, dd in zip(rt.classes, rt.diagrams) if dd.evaluate(labels)]
        if len(holding) != 1:  # impossible for a checked policy
            raise PolicyError(f"labels put the completion in {len(holding)} classes")
        return holding[0]

    def _columns(self, rt: ResponseType, probs):
        import torch

        probs = torch.as_tensor(probs, dtype=torch.float64 if not torch.is_tensor(probs) else None)
        if probs.dim() != 2 or probs.shape[1] != len(self.propositions):
            raise PolicyError(f"expected probabilities of shape [N, {len(self.propositions)}] "
                              f"(one column per proposition), got {list(probs.shape)}")
        index = {n: i for i, n in enumerate(self.proposition_names)}
        return probs, [probs[:, index[v]] for v in rt.diagrams[0].variables] if rt.diagrams else []

    def class_probabilities(self, response_type: str, probs):
        """Exact class probabilities `[N, C]` from P(yes) `[N, P]` (policy order),
        treating propositions as independent, normalised over the classes."""
        import torch

        rt = self.response_type(response_type)
        probs, columns = self._columns(rt, probs)
        n = probs.shape[0]
        cols = []
        for dd in rt.diagrams:
            value = dd.probability(columns)
            cols.append(value if torch.is_tensor(value) else torch.full((n,), float(value),
                                                                        dtype=probs.dtype, device=probs.device))
        out = torch.stack(cols, dim=1)
        total = out.sum(dim=1, keepdim=True)
        return out / torch.where(total > 0, total, torch.ones_like(total))

    def features(self, response_type: str, probs):
        """`[N, F]` features in schema order: proposition P(yes), then class probabilities."""
        import torch

        rt = self.response_type(response_type)
        index = {n: i for i, n in enumerate(self.proposition_names)}
        probs = torch.as_tensor(probs)
        classes = self.class_probabilities(response_type, probs)
        picked = probs[:, [index[p] for p in rt.propositions]].to(classes.dtype)
        return torch.cat([picked, classes], dim=1)


_jinja: dict[str, Any] = {}  # template source -> compiled template
_static: dict[str, str] = {}  # template source -> its static prefix


def _compiled(source: str):
    tpl = _jinja.get(source)
    if tpl is None:
        tpl = _jinja[source] = environment().from_string(source)
    return tpl


def _regex(pattern: str, flags: str) -> re.Pattern:
    value = 0
    for ch in flags:
        value |= _FLAGS[ch]
    return re.compile(pattern, value)


def load_policy(folder) -> CompiledPolicy:
    """Read a compiled policy folder (`rbrc compile … -o FOLDER`), or its `policy.json`."""
    doc, templates = read_document(folder)
    return from_document(doc, templates, where=str(Path(folder) / POLICY_FILE)
                         if Path(folder).name != POLICY_FILE else str(folder))


def from_document(doc: Mapping[str, Any], templates: Mapping[str, str], where: str = POLICY_FILE) -> CompiledPolicy:
    try:
        if doc.get("format") != FORMAT_VERSION:
            raise PolicyError(f"{where}: format {doc.get('format')!r}; this rbrlang reads format "
                              f"{FORMAT_VERSION}: recompile the policy")
        props = tuple(
            Proposition(p["name"], "grader", p.get("question", ""), templates[p["name"]])
            if p["kind"] == "grader" else
            Proposition(p["name"], "matches", pattern=p["pattern"], flags=p.get("flags", ""))
            for p in doc["propositions"])
        rts = {}
        for r in doc["response_types"]:
            rts[r["name"]] = ResponseType(
                name=r["name"], classes=tuple(c["name"] for c in r["classes"]),
                diagrams=tuple(logic.DecisionDiagram.from_json(c["dd"]) for c in r["classes"]),
                propositions=tuple(r["propositions"]), features=tuple(r["features"]),
                schema_hash=r["schema_hash"],
                ranks=tuple(tuple(tuple(g) for g in chain) for chain in r["ranks"]),
                labels=tuple(r["labels"]))
        return CompiledPolicy(
            name=doc["policy"], description=doc.get("description", ""), propositions=props,
            response_types=rts, class_order=tuple(doc["class_order"]), routes=dict(doc["routes"]),
            default_route=doc.get("default_route"), yes=tuple(doc["grader"]["yes"]),
            no=tuple(doc["grader"]["no"]), source_sha256=doc.get("source_sha256", ""), document=doc)
    except PolicyError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise PolicyError(f"{where}: malformed compiled policy ({type(exc).__name__}: {exc}); recompile it")
