"""The syntax tree: frozen dataclasses carrying source spans.

Every node's `span` is excluded from equality, so two trees that say the same
thing in different layouts compare equal (the formatter relies on that).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ...source import Span

NOSPAN = Span("<none>", 0, 0, 0, 0)


def _span():
    return field(default=NOSPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Ident:
    text: str
    span: Span = _span()


@dataclass(frozen=True)
class Str:
    value: str
    span: Span = _span()


# --- expressions -----------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    name: Ident
    span: Span = _span()


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class And:
    operands: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True)
class Or:
    operands: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    """`all(...)`, `any(...)`, `none(...)`: sugar kept as written for the formatter."""

    func: str
    args: tuple["Expr", ...]
    span: Span = _span()


Expr = Union[Ref, Not, And, Or, Call]


# --- items -------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyDecl:
    name: Ident
    description: Optional[Str]
    span: Span = _span()


@dataclass(frozen=True)
class Import:
    path: Str
    span: Span = _span()


@dataclass(frozen=True)
class GraderSetting:
    key: str  # "template", "yes", "no", "system" or "prefill"
    values: tuple[Union[Ident, Str], ...]
    span: Span = _span()


@dataclass(frozen=True)
class Grader:
    settings: tuple[GraderSetting, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Template:
    name: Ident
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class Question:
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class Instruct:
    """`instruct "…"`: how a generator is told to make the proposition true
    (`rbrc synth`); without it, the question is used."""

    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class PropTemplate:
    name: Ident
    span: Span = _span()


@dataclass(frozen=True)
class Turn:
    role: str  # system, user, assistant, because
    text: Str
    span: Span = _span()


@dataclass(frozen=True)
class Example:
    label: Ident  # `yes` or `no`, checked later
    turns: tuple[Turn, ...]
    short: bool  # `example yes "..."`: one assistant turn
    span: Span = _span()


PropItem = Union[Question, Instruct, PropTemplate, Example]


@dataclass(frozen=True)
class Proposition:
    name: Ident
    items: tuple[PropItem, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Matches:
    name: Ident
    pattern: str
    flags: str
    span: Span = _span()


@dataclass(frozen=True)
class Define:
    name: Ident
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Classes:
    names: tuple[Ident, ...]
    span: Span = _span()


@dataclass(frozen=True)
class ClassRule:
    name: Ident
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Rank:
    groups: tuple[tuple[Ident, ...], ...]
    span: Span = _span()


@dataclass(frozen=True)
class ExtraFeatures:
    """`features a, b`: propositions added to the response type's features
    although no class formula mentions them."""

    names: tuple[Ident, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Num:
    """A number as written (`1`, `0.75`, `-2e-1`): the text is kept so the
    formatter gives it back unchanged; the checker reads its value."""

    text: str
    span: Span = _span()

    @property
    def value(self) -> float:
        return float(self.text)


@dataclass(frozen=True)
class ClassScore:
    name: Ident
    score: Num
    span: Span = _span()


@dataclass(frozen=True)
class ClassScores:
    """`scores ideal 1, ok 0.5, bad 0`: the reward each class gives before
    any fit (default: evenly spaced from 1, best, to 0, worst)."""

    entries: tuple[ClassScore, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Response:
    name: Ident
    items: tuple[Union[ClassRule, Rank, ExtraFeatures, ClassScores], ...]
    span: Span = _span()


@dataclass(frozen=True)
class Route:
    categories: Optional[tuple[Str, ...]]  # None: `default`
    target: Ident
    span: Span = _span()


Item = Union[PolicyDecl, Import, Grader, Template, Proposition, Matches, Define,
             Classes, Response, Route]


@dataclass(frozen=True)
class Comment:
    text: str  # with its leading `#`
    line: int
    own_line: bool  # nothing but whitespace before it on its line


@dataclass(frozen=True)
class Module:
    version: int
    items: tuple[Item, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False)
    span: Span = _span()


def declared_name(item: Item) -> Optional[Ident]:
    """The name an item adds to the policy's namespace, if any."""
    if isinstance(item, (Template, Proposition, Matches, Define, Response)):
        return item.name
    return None


def walk_refs(expr: Expr):
    """Every `Ref` in an expression, left to right, without recursion limits."""
    stack = [expr]
    out = []
    while stack:
        e = stack.pop()
        if isinstance(e, Ref):
            out.append(e)
        elif isinstance(e, Not):
            stack.append(e.operand)
        else:
            stack.extend(reversed(e.operands if isinstance(e, (And, Or)) else e.args))
    return out
