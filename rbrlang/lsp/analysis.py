"""One editor buffer checked by the compiler, and the names in it.

The language server knows nothing of the language itself: diagnostics are the
checker's (`load_program` + `check_loaded`, the two halves of `rbrc check`),
and the name index below is read off the compiler's syntax tree. Nothing here
imports pygls, so it is plain data between the compiler and the server.
"""
from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .. import diagnostics as dg
from ..compiler.check import check_loaded, load_program
from ..compiler.check.model import CheckedPolicy
from ..compiler.check.program import Program
from ..compiler.explain import diagram_space, sum_of_products
from ..compiler.syntax import ast

# What a name declares, by the item that declares it (`classes` declares each of its names).
_DECLARES = {ast.Template: "template", ast.Proposition: "proposition", ast.Matches: "proposition",
             ast.Define: "define", ast.Response: "response"}


@dataclass(frozen=True)
class Occurrence:
    """One place a policy name is written: where it is declared, or used."""

    name: str
    kind: str  # proposition, define, template, class or response
    span: dg.Span
    declaration: bool
    item: object  # the item it is written in (the response of a class rule, say)


@dataclass(frozen=True)
class Analysis:
    path: Path  # the root file, resolved
    version: Optional[int]  # the editor's version of the buffer analysed
    diagnostics: tuple[dg.Diagnostic, ...]
    sources: Mapping[str, str]  # display name -> text, every file reached
    program: Optional[Program]  # None when the root file did not parse
    checked: Optional[CheckedPolicy]  # None when there are errors

    @functools.cached_property
    def occurrences(self) -> tuple[Occurrence, ...]:
        return tuple(_occurrences(self.program)) if self.program is not None else ()

    @functools.cached_property
    def _by_file(self) -> dict[str, list[tuple[tuple[int, int], Occurrence]]]:
        out: dict[str, list] = {}
        for occ in self.occurrences:
            out.setdefault(occ.span.file, []).append(((occ.span.line, occ.span.column), occ))
        for row in out.values():
            row.sort(key=lambda pair: pair[0])
        return out

    @functools.cached_property
    def kinds(self) -> dict[str, str]:
        """Every declared name -> its kind (one namespace per policy)."""
        out: dict[str, str] = {}
        for occ in self.occurrences:
            if occ.declaration:
                out.setdefault(occ.name, occ.kind)
        return out

    def at(self, file: str, line: int, column: int) -> Optional[Occurrence]:
        """The name written at a place (1-based line and column), if any."""
        row = self._by_file.get(file, [])
        i = bisect.bisect_right(row, (line, column), key=lambda pair: pair[0]) - 1
        if i >= 0:
            occ = row[i][1]
            if occ.span.line == line and occ.span.column <= column <= occ.span.end_column:
                return occ
        return None

    def occurrences_of(self, name: str) -> list[Occurrence]:
        return [o for o in self.occurrences if o.name == name]

    def declaration_of(self, name: str) -> Optional[Occurrence]:
        return next((o for o in self.occurrences if o.name == name and o.declaration), None)

    @functools.cached_property
    def _lines(self) -> dict[str, list[str]]:
        return {}

    def lines(self, file: str) -> list[str]:
        """A file's lines, split once per check (positions are converted per line)."""
        if file not in self._lines:
            text = self.sources.get(file)
            self._lines[file] = text.split("\n") if text is not None else []
        return self._lines[file]

    def items_of_program(self) -> list[ast.Item]:
        return [item for _, item in self.program.items()] if self.program is not None else []

    @functools.cached_property
    def sums(self) -> dict[tuple[str, str], str]:
        """(response type, class) -> the class's formula as `rbrc explain`
        prints it (a sum of products, from the checker's decision diagrams):
        only for a policy that checks. Computed on the first hover."""
        if self.checked is None:
            return {}
        responses = self.checked.responses
        space = diagram_space(self.checked.proposition_names, [dd for r in responses for dd in r.diagrams])
        return {(r.name, name): sum_of_products(space, dd)
                for r in responses for (name, _), dd in zip(r.classes, r.diagrams)}

    def items_of(self, file: str) -> list[ast.Item]:
        """The items written in one file (an import's items stay in its own file)."""
        if self.program is None:
            return []
        return next((list(u.module.items) for u in self.program.units if u.source.name == file), [])


def analyse(path: Path, overlay: Mapping[Path, bytes], version: Optional[int] = None) -> Analysis:
    """Check `path` as `rbrc check` would, the open buffers in `overlay` read
    in place of their files."""
    program, diags, sources = load_program(path, overlay)
    checked, diags = check_loaded(program, diags)
    return Analysis(path.resolve(), version, tuple(diags), dict(sources), program, checked)


def _occurrences(program: Program):
    declared: dict[str, str] = {}
    items = list(program.items())
    for _, item in items:
        if type(item) in _DECLARES:
            declared.setdefault(item.name.text, _DECLARES[type(item)])
        elif isinstance(item, ast.Classes):
            for ident in item.names:
                declared.setdefault(ident.text, "class")

    def use(ident: ast.Ident, expected: str, item) -> Occurrence:
        # A use names what is declared under that name (one namespace), else
        # what its place expects: an undefined name still renames and finds.
        return Occurrence(ident.text, declared.get(ident.text, expected), ident.span, False, item)

    for _, item in items:
        if type(item) in _DECLARES:
            yield Occurrence(item.name.text, _DECLARES[type(item)], item.name.span, True, item)
        if isinstance(item, ast.Classes):
            for ident in item.names:
                yield Occurrence(ident.text, "class", ident.span, True, item)
        elif isinstance(item, ast.Define):
            yield from (use(r.name, "proposition", item) for r in ast.walk_refs(item.expr))
        elif isinstance(item, ast.Proposition):
            yield from (use(p.name, "template", item) for p in item.items if isinstance(p, ast.PropTemplate))
        elif isinstance(item, ast.Grader):
            for setting in item.settings:
                if setting.key == "template":
                    yield use(setting.values[0], "template", item)
        elif isinstance(item, ast.Route):
            yield use(item.target, "response", item)
        elif isinstance(item, ast.Response):
            for part in item.items:
                if isinstance(part, ast.ClassRule):
                    yield use(part.name, "class", item)
                    yield from (use(r.name, "proposition", item) for r in ast.walk_refs(part.expr))
                elif isinstance(part, ast.Rank):
                    yield from (use(i, "class", item) for group in part.groups for i in group)
                elif isinstance(part, ast.ExtraFeatures):
                    yield from (use(i, "proposition", item) for i in part.names)
                elif isinstance(part, ast.ClassScores):
                    yield from (use(e.name, "class", item) for e in part.entries)
