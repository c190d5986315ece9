"""State shared by the checker's passes while they run."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ... import diagnostics as dg
from ...policy.logic import Formula
from ...source import Span
from ..syntax import ast
from .program import Program, Unit

KIND_WORDS = {
    "template": "a template", "proposition": "a proposition", "define": "a define",
    "class": "a class", "response": "a response type",
}


@dataclass
class Symbol:
    name: str
    kind: str
    ident: ast.Ident
    item: object


@dataclass
class Context:
    program: Program
    diags: list[dg.Diagnostic] = field(default_factory=list)
    symbols: dict[str, Symbol] = field(default_factory=dict)
    items: list[tuple[Unit, ast.Item]] = field(default_factory=list)
    formulas: dict[str, Formula] = field(default_factory=dict)  # define name -> formula
    # (code, name) -> index in diags: one typo in a declaration is one error,
    # however often the name is used; the later uses are its related places.
    _name_errors: dict[tuple[str, str], int] = field(default_factory=dict)

    def of(self, kind: type) -> list:
        return [item for _, item in self.items if isinstance(item, kind)]

    def one(self, kind: type, what: str) -> Optional[object]:
        found = self.of(kind)
        for extra in found[1:]:
            self.error("E0119", extra.span, f"{what} declared twice", f"keep one {what}",
                       related=[(found[0].span, "first declared here")])
        return found[0] if found else None

    def error(self, code: str, span: Span, message: str, help: str = "", notes: Iterable[str] = (),
              related: Iterable[tuple[Span, str]] = ()):
        self.diags.append(dg.error(code, span, message, help, notes, related))

    def warning(self, code: str, span: Span, message: str, help: str = "", notes: Iterable[str] = (),
                related: Iterable[tuple[Span, str]] = ()):
        self.diags.append(dg.warning(code, span, message, help, notes, related))

    @property
    def failed(self) -> bool:
        return dg.has_errors(self.diags)

    def names_of(self, *kinds: str) -> list[str]:
        return [s.name for s in self.symbols.values() if s.kind in kinds]

    def suggest(self, name: str, *kinds: str) -> str:
        return dg.did_you_mean(name, self.names_of(*kinds))

    def seen_before(self, code: str, ident: ast.Ident) -> bool:
        """Whether this name already has this error; if so, this use becomes one
        of the error's related places."""
        key = (code, ident.text)
        if key not in self._name_errors:
            self._name_errors[key] = len(self.diags)
            return False
        index = self._name_errors[key]
        first = self.diags[index]
        self.diags[index] = dataclasses.replace(first, related=first.related + ((ident.span, "also used here"),))
        return True

    def lookup(self, ident: ast.Ident, kinds: tuple[str, ...], role: str) -> Optional[Symbol]:
        """Resolve a name that must be one of `kinds`, reporting what is wrong."""
        sym = self.symbols.get(ident.text)
        wanted = " or ".join(KIND_WORDS[k] for k in kinds)
        if sym is None:
            if self.seen_before("E0102", ident):
                return None
            hint = self.suggest(ident.text, *kinds) or f"declare it, or use {wanted} that exists"
            self.error("E0102", ident.span, f"undefined name `{ident.text}` ({role})", hint)
            return None
        if sym.kind not in kinds:
            if self.seen_before("E0116", ident):
                return None
            self.error("E0116", ident.span,
                       f"`{ident.text}` is {KIND_WORDS[sym.kind]}, but {role} needs {wanted}",
                       self.suggest(ident.text, *kinds) or f"use {wanted} here",
                       related=[(sym.ident.span, f"declared here as {KIND_WORDS[sym.kind]}")])
            return None
        return sym
