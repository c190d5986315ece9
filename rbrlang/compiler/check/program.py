"""The loaded policy: its root file and every imported file, parsed, in order."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

from ... import diagnostics as dg
from ...source import SourceError, SourceFile, decode_source, display_name, read_source
from ..syntax import ast
from ..syntax.parser import parse_source

# What an imported file may contain: shared vocabulary, not policy decisions.
IMPORTABLE = (ast.Import, ast.Template, ast.Proposition, ast.Matches, ast.Define)


@dataclass(frozen=True)
class Unit:
    source: SourceFile
    module: ast.Module
    imported: bool


@dataclass(frozen=True)
class Program:
    root: Path
    units: tuple[Unit, ...]  # root first, then imports in first-reached order

    def items(self) -> Iterator[tuple[Unit, ast.Item]]:
        """Every item in declaration order: an import's items at the `import`."""
        # A stack, not a recursive closure: a closure that calls itself is a
        # reference cycle, which would keep the whole program alive after each
        # walk until a full garbage collection.
        by_path = {u.source.path: u for u in self.units}
        root = self.units[0]
        seen: set[Path] = {root.source.path}
        stack = [(root, iter(root.module.items))]
        while stack:
            unit, rest = stack[-1]
            item = next(rest, None)
            if item is None:
                stack.pop()
            elif isinstance(item, ast.Import):
                target = _resolve(unit.source.path, item.path.value)
                if target in by_path and target not in seen:
                    seen.add(target)
                    stack.append((by_path[target], iter(by_path[target].module.items)))
            else:
                yield unit, item

    @property
    def sources(self) -> dict[str, str]:
        return {u.source.name: u.source.text for u in self.units}


def _resolve(importer: Path, relative: str) -> Path:
    return (importer.parent / relative).resolve()


def load_program(path: Path, overlay: Optional[Mapping[Path, bytes]] = None
                 ) -> tuple[Optional[Program], list[dg.Diagnostic], dict[str, str]]:
    """Read and parse `path` and, transitively, its imports. `overlay` (resolved
    path -> bytes) stands in for files on disk: an editor's unsaved buffers."""
    overlay = overlay or {}
    diags: list[dg.Diagnostic] = []
    units: dict[Path, Unit] = {}
    sources: dict[str, str] = {}
    root = path.resolve()

    def load(p: Path, name: str, imported: bool, via: Optional[ast.Import], chain: tuple[Path, ...]):
        if p in chain:
            cycle = " → ".join(display_name(q) for q in chain[chain.index(p):] + (p,))
            diags.append(dg.error("E0115", via.path.span, f"import cycle: {cycle}",
                                  "move what both files need into a third file that both import"))
            return
        if p in units:
            return
        try:
            src = decode_source(p, name, overlay[p]) if p in overlay else read_source(p, name)
        except SourceError as exc:
            if via is not None and exc.code == "E0001":
                diags.append(dg.error("E0114", via.path.span, f"imported file `{via.path.value}` not found",
                                      f"looked for {display_name(p)}; import paths are relative to the importing file"))
            else:
                diags.append(dg.error(exc.code, exc.span, exc.message, exc.help))
                if exc.text is not None:
                    sources[exc.span.file] = exc.text
            return
        sources[src.name] = src.text
        result = parse_source(src)
        diags.extend(result.diagnostics)
        if result.value is None:
            return
        unit = Unit(src, result.value, imported)
        units[p] = unit
        for item in result.value.items:
            if imported and not isinstance(item, IMPORTABLE):
                kind = type(item).__name__.lower().replace("decl", "")
                diags.append(dg.error("E0122", item.span, f"an imported file cannot declare a {kind}",
                                      "imported files hold templates, propositions and defines; "
                                      "move this into the policy that imports it"))
            if isinstance(item, ast.Import):
                target = _resolve(p, item.path.value)
                load(target, display_name(target), True, item, chain + (p,))

    load(root, display_name(path), False, None, ())
    # `load` calls itself through its closure: a function-cell cycle that would
    # keep every parsed unit alive until a full garbage collection (the language
    # server loads a program per edit). Emptying the cell frees them now.
    del load
    if root not in units:
        return None, diags, sources
    ordered = [units[root]] + [u for k, u in units.items() if k != root]
    return Program(root, tuple(ordered)), diags, sources
