"""The checked policy: what the checker proves and codegen writes out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ...policy.logic import DecisionDiagram, Formula


@dataclass(frozen=True)
class GraderSpec:
    template: str
    yes: tuple[str, ...]
    no: tuple[str, ...]
    system: str = ""  # the grader's system message ("" : the chat template's own)
    prefill: str = ""  # text the grader's answer turn starts with, before the yes/no token


@dataclass(frozen=True)
class ExampleSpec:
    label: str  # "yes" or "no"
    turns: tuple[tuple[str, str], ...]  # (role, text); `because` last if present


@dataclass(frozen=True)
class PropositionSpec:
    name: str
    kind: str  # "grader" or "matches"
    question: str = ""
    examples: tuple[ExampleSpec, ...] = ()
    template: str = ""
    pattern: str = ""
    flags: str = ""
    instruct: str = ""  # `instruct "…"`: for generators (rbrc synth); "" = the question

    @property
    def graded(self) -> bool:
        """Answered by the grader model (a prompt); else a `matches` regex."""
        return self.kind == "grader"


@dataclass(frozen=True)
class ResponseSpec:
    name: str
    classes: tuple[tuple[str, Formula], ...]  # in class order
    extra_features: tuple[str, ...] = ()
    ranks: tuple[tuple[tuple[str, ...], ...], ...] = ()
    scores: tuple[float, ...] = ()  # one per class, in class order: the author's, else evenly spaced
    diagrams: tuple[DecisionDiagram, ...] = ()  # one per class, from the partition proof


@dataclass(frozen=True)
class RouteSpec:
    categories: Optional[tuple[str, ...]]  # None: default
    target: str


@dataclass(frozen=True)
class CheckedPolicy:
    name: str
    description: str
    grader: GraderSpec
    templates: dict = field(hash=False)  # name -> Jinja source
    propositions: tuple[PropositionSpec, ...] = ()
    defines: tuple[tuple[str, Formula], ...] = ()
    class_order: tuple[str, ...] = ()
    responses: tuple[ResponseSpec, ...] = ()
    routes: tuple[RouteSpec, ...] = ()
    source_hash: str = ""  # over every file's path (relative to the root's folder) and text

    @property
    def proposition_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.propositions)

    @property
    def define_map(self) -> dict[str, Formula]:
        return dict(self.defines)
