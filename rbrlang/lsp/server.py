"""The pygls server: editor requests in, the compiler's answers out.

Checking runs off the event loop, one document at a time, in one worker
thread: the loop keeps answering while a 50,000-line file is checked, and
however fast the edits come, at most one check runs and one waits per open
document (the newest text; older ones are never queued). A request that needs
names (hover, definition, rename…) waits for its document's check of the
text it was asked about, for `WAIT_S` at most, else gets no answer rather
than one at stale positions. Nothing a buffer holds can stop the server: a
failure inside a check becomes a diagnostic and the next edit is checked.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional
from urllib.parse import unquote

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from .._version import __version__
from .. import diagnostics as dg
from ..compiler.fmt import format_source
from ..compiler.syntax import ast
from ..compiler.syntax.lexicon import lexicon
from ..compiler.syntax.parser import parse_source
from ..errors import SourceError
from ..source import SourceFile, decode_source, display_name
from .analysis import Analysis, Occurrence, analyse
from .complete import suggestions
from .hover import hover_text

logger = logging.getLogger(__name__)

DEBOUNCE_S = 0.15  # a pause in typing this long starts a check
WAIT_S = 60.0

_KIND_SYMBOLS = {"proposition": lsp.SymbolKind.Boolean, "define": lsp.SymbolKind.Function,
                 "template": lsp.SymbolKind.String, "response": lsp.SymbolKind.Class,
                 "class": lsp.SymbolKind.EnumMember}
_KIND_COMPLETIONS = {"keyword": lsp.CompletionItemKind.Keyword, "proposition": lsp.CompletionItemKind.Variable,
                     "define": lsp.CompletionItemKind.Function, "template": lsp.CompletionItemKind.Text,
                     "response": lsp.CompletionItemKind.Class, "class": lsp.CompletionItemKind.EnumMember}


def _units(text: str, encoding) -> int:
    """The length of `text` in the client's position units."""
    if text.isascii() or encoding == lsp.PositionEncodingKind.Utf32:
        return len(text)
    if encoding == lsp.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(ord(c) > 0xFFFF for c in text)


def _column(line: str, character: int, encoding) -> int:
    """A client's character offset on a line as a 0-based code point index."""
    if line.isascii() or encoding == lsp.PositionEncodingKind.Utf32:
        return min(character, len(line))
    seen = 0
    for i, c in enumerate(line):
        if seen >= character:
            return i
        seen += _units(c, encoding)
    return len(line)


class RbrServer(LanguageServer):
    def __init__(self):
        super().__init__("rbrc", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.analyses: dict[str, Analysis] = {}  # open document -> its latest check
        self.failed: dict[str, Optional[int]] = {}  # open document -> the version whose check failed
        self.published: dict[str, dict[str, list[lsp.Diagnostic]]] = {}  # root -> file -> diagnostics
        self.dirty: dict[str, None] = {}  # documents to check, in order
        self.urgent: set[str] = set()  # ... of which a request waits for these
        self.last_change = 0.0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="rbr-check")
        self._wake: Optional[asyncio.Event] = None
        self._done: Optional[asyncio.Condition] = None

    # --- documents and places --------------------------------------------------------

    def doc(self, uri: str):
        return self.workspace.text_documents.get(unquote(uri))

    @staticmethod
    def path_of(uri: str) -> Path:
        fs = to_fs_path(uri) if uri.startswith("file:") else None
        if fs is None:  # an unsaved, untitled buffer: a name in the working folder
            return (Path.cwd() / (re.sub(r"\W", "_", uri) + ".rbr")).resolve()
        return Path(fs).resolve()

    def uri_for(self, name: str) -> str:
        """The document a diagnostic's file name (a display name) is."""
        path = Path(name)
        path = (path if path.is_absolute() else Path.cwd() / path).resolve()
        for uri in self.workspace.text_documents:
            if self.path_of(uri) == path:
                return uri
        return path.as_uri()

    def name_of(self, uri: str) -> str:
        return display_name(self.path_of(uri))

    @property
    def encoding(self):
        return self.workspace.position_encoding

    def position(self, lines: list[str], line: int, column: int) -> lsp.Position:
        """A compiler place (1-based line and code point column) in the client's units."""
        if not 0 < line <= len(lines):
            return lsp.Position(max(line - 1, 0), max(column - 1, 0))
        return lsp.Position(line - 1, _units(lines[line - 1][:max(column - 1, 0)], self.encoding))

    def range(self, span: dg.Span, analysis: Analysis) -> lsp.Range:
        lines = analysis.lines(span.file)
        return lsp.Range(self.position(lines, span.line, span.column),
                         self.position(lines, span.end_line, span.end_column))

    def place(self, analysis: Analysis, uri: str, pos: lsp.Position) -> tuple[str, int, int]:
        """A client position as (file name, 1-based line, 1-based column)."""
        name = self.name_of(uri)
        lines = analysis.lines(name)
        line = lines[pos.line] if 0 <= pos.line < len(lines) else ""
        return name, pos.line + 1, _column(line, pos.character, self.encoding) + 1

    def location(self, occ: Occurrence, analysis: Analysis) -> lsp.Location:
        return lsp.Location(uri=self.uri_for(occ.span.file), range=self.range(occ.span, analysis))

    # --- checking ----------------------------------------------------------------------

    def changed(self, uri: str) -> None:
        """A document's text changed: check it, and every open policy that imports it."""
        path = self.path_of(uri)
        self.dirty[uri] = None
        for root, analysis in self.analyses.items():
            if analysis.program is not None and any(u.source.path == path for u in analysis.program.units[1:]):
                self.dirty[root] = None
        self.last_change = time.monotonic()
        self._wake_worker()

    def _wake_worker(self) -> None:
        if self._wake is None:
            self._wake, self._done = asyncio.Event(), asyncio.Condition()
            asyncio.get_running_loop().create_task(self._worker())
        self._wake.set()

    def fresh(self, uri: str) -> bool:
        doc = self.doc(uri)
        if doc is None:
            return True  # closed: nothing to wait for
        analysis = self.analyses.get(uri)
        return (analysis is not None and analysis.version == doc.version) or self.failed.get(uri, -1) == doc.version

    def overlay(self) -> dict[Path, bytes]:
        # `surrogatepass`: a lone surrogate from the client becomes bytes that
        # are not UTF-8, which the compiler reports (E0003) like such a file.
        return {self.path_of(uri): doc.source.encode("utf-8", "surrogatepass")
                for uri, doc in self.workspace.text_documents.items()}

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.dirty:
                if not self.urgent & self.dirty.keys():
                    while (wait := self.last_change + DEBOUNCE_S - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                uri = next((u for u in self.dirty if u in self.urgent), next(iter(self.dirty)))
                del self.dirty[uri]
                self.urgent.discard(uri)
                try:
                    await self._check_one(loop, uri)
                except Exception:  # a bug in the server's own part: this check is lost, not the worker
                    logger.exception("publishing the check of %s failed", uri)
                async with self._done:
                    self._done.notify_all()

    async def _check_one(self, loop, uri: str) -> None:
        doc = self.doc(uri)
        if doc is None:
            return
        version = doc.version
        analysis, failure = await loop.run_in_executor(self.executor, _check, self.path_of(uri), self.overlay(),
                                                       version)
        if self.doc(uri) is None:  # closed meanwhile
            return
        if analysis is not None:
            self.analyses[uri] = analysis
            self.failed.pop(uri, None)
            self.publish(uri, analysis)
        else:
            self.failed[uri] = version
            self.publish_failure(uri, failure)

    async def current(self, uri: str) -> Optional[Analysis]:
        """The check of the document's present text, waited for (`WAIT_S` at most)."""
        if self.doc(uri) is None:
            return None
        if not self.fresh(uri):
            self.urgent.add(uri)
            self.dirty.setdefault(uri, None)
            self._wake_worker()
            try:
                async with self._done:
                    await asyncio.wait_for(self._done.wait_for(lambda: self.fresh(uri)), WAIT_S)
            except asyncio.TimeoutError:
                return None
        analysis = self.analyses.get(uri)
        doc = self.doc(uri)
        return analysis if analysis is not None and doc is not None and analysis.version == doc.version else None

    # --- diagnostics -------------------------------------------------------------------

    def diagnostic(self, d: dg.Diagnostic, analysis: Analysis) -> lsp.Diagnostic:
        message = d.message + "".join(f"\nnote: {n}" for n in d.notes) + (f"\nhelp: {d.help}" if d.help else "")
        related = [lsp.DiagnosticRelatedInformation(
            location=lsp.Location(uri=self.uri_for(span.file), range=self.range(span, analysis)), message=label)
            for span, label in d.related]
        return lsp.Diagnostic(
            range=self.range(d.span, analysis), message=message, code=d.code, source="rbrc",
            severity=lsp.DiagnosticSeverity.Error if d.is_error else lsp.DiagnosticSeverity.Warning,
            related_information=related or None, data={"help": d.help, "notes": list(d.notes)})

    def publish(self, root: str, analysis: Analysis) -> None:
        per_file: dict[str, list[lsp.Diagnostic]] = {root: []}
        for d in analysis.diagnostics:
            per_file.setdefault(self.uri_for(d.span.file), []).append(self.diagnostic(d, analysis))
        self._replace(root, per_file)

    def publish_failure(self, root: str, failure: str) -> None:
        self._replace(root, {root: [lsp.Diagnostic(
            range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 1)), severity=lsp.DiagnosticSeverity.Error,
            source="rbrc", message=failure)]})

    def _replace(self, root: str, per_file: dict[str, list[lsp.Diagnostic]]) -> None:
        """One root's diagnostics replace its last ones; each file shows those
        of every open policy that reaches it (a shared import's error once)."""
        old = self.published.pop(root, {})
        if per_file:
            self.published[root] = per_file
        for target in sorted(set(old) | set(per_file)):
            merged, seen = [], set()
            for files in self.published.values():
                for d in files.get(target, []):
                    key = (d.range.start.line, d.range.start.character, d.code, d.message)
                    if key not in seen:
                        seen.add(key)
                        merged.append(d)
            doc = self.doc(target)
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
                uri=target, diagnostics=merged, version=doc.version if doc is not None else None))

    def closed(self, uri: str) -> None:
        self.analyses.pop(uri, None)
        self.failed.pop(uri, None)
        self.dirty.pop(uri, None)
        self._replace(uri, {})

    # --- requests ----------------------------------------------------------------------

    async def occurrence(self, uri: str, pos: lsp.Position) -> Optional[tuple[Analysis, Occurrence]]:
        analysis = await self.current(uri)
        if analysis is None:
            return None
        occ = analysis.at(*self.place(analysis, uri, pos))
        return (analysis, occ) if occ is not None else None

    def route_at(self, analysis: Analysis, uri: str, pos: lsp.Position) -> Optional[Occurrence]:
        """Anywhere on a `route` line: its response type."""
        name, line, column = self.place(analysis, uri, pos)
        for item in analysis.items_of(name):
            s = item.span
            if isinstance(item, ast.Route) and (s.line, s.column) <= (line, column) <= (s.end_line, s.end_column):
                return analysis.at(name, item.target.span.line, item.target.span.column)
        return None

    def rename_edits(self, analysis: Analysis, occ: Occurrence, new: str) -> dict[str, list[lsp.TextEdit]]:
        if not re.fullmatch(lexicon().patterns["NAME"], new):
            raise JsonRpcInvalidParams(f"`{new}` is not a name: a letter or `_`, then letters, digits or `_`, "
                                       "and not `and`, `or` or `not`")
        if new in analysis.kinds and new != occ.name:
            raise JsonRpcInvalidParams(f"`{new}` is already declared (as a {analysis.kinds[new]}); propositions, "
                                       "defines, classes, response types and templates share one namespace")
        places: dict[str, list[dg.Span]] = {}
        for o in analysis.occurrences_of(occ.name):
            places.setdefault(o.span.file, []).append(o.span)
        edits: dict[str, list[lsp.TextEdit]] = {}
        for file, spans in places.items():
            text = analysis.sources[file]
            # The renamed file must still parse (a keyword of one context can
            # be a name in another): asked of the parser, not of a word list.
            renamed = text
            for s in sorted(spans, key=lambda s: s.start, reverse=True):
                renamed = renamed[:s.start] + new + renamed[s.end:]
            if parse_source(SourceFile(Path(file), file, renamed)).value is None:
                raise JsonRpcInvalidParams(f"renaming `{occ.name}` to `{new}` would make {file} unparsable")
            edits[self.uri_for(file)] = [lsp.TextEdit(range=self.range(s, analysis), new_text=new) for s in spans]
        return edits

    def symbols(self, analysis: Analysis, uri: str) -> list[lsp.DocumentSymbol]:
        out = []

        def symbol(name: str, kind, item_span: dg.Span, name_span: dg.Span, children=None, detail=None):
            return lsp.DocumentSymbol(name=name, kind=kind, range=self.range(item_span, analysis),
                                      selection_range=self.range(name_span, analysis), children=children,
                                      detail=detail)

        for item in analysis.items_of(self.name_of(uri)):
            if isinstance(item, (ast.Proposition, ast.Matches, ast.Define, ast.Template)):
                kind = {ast.Proposition: "proposition", ast.Matches: "proposition", ast.Define: "define",
                        ast.Template: "template"}[type(item)]
                out.append(symbol(item.name.text, _KIND_SYMBOLS[kind], item.span, item.name.span, detail=kind))
            elif isinstance(item, ast.Response):
                rules = [symbol(p.name.text, _KIND_SYMBOLS["class"], p.span, p.name.span, detail="class")
                         for p in item.items if isinstance(p, ast.ClassRule)]
                out.append(symbol(item.name.text, _KIND_SYMBOLS["response"], item.span, item.name.span, rules,
                                  "response"))
            elif isinstance(item, ast.Classes):
                members = [symbol(i.text, _KIND_SYMBOLS["class"], i.span, i.span, detail="class")
                           for i in item.names]
                out.append(symbol("classes", lsp.SymbolKind.Enum, item.span, item.names[0].span, members))
            elif isinstance(item, ast.Route):
                where = "default" if item.categories is None else ", ".join(c.value for c in item.categories)
                out.append(symbol(f"route {where} -> {item.target.text}", lsp.SymbolKind.Event, item.span,
                                  item.target.span))
            elif isinstance(item, ast.PolicyDecl):
                out.append(symbol(f"policy {item.name.text}", lsp.SymbolKind.Module, item.span, item.name.span))
        return out

    def format_edits(self, uri: str) -> Optional[list[lsp.TextEdit]]:
        doc = self.doc(uri)
        if doc is None:
            return None
        path = self.path_of(uri)
        source = doc.source
        try:
            src = decode_source(path, display_name(path), source.encode("utf-8", "surrogatepass"))
        except SourceError:
            return None  # not text: its diagnostic says so
        formatted = format_source(src)
        if formatted.value is None:
            return None  # syntax errors: the diagnostics say where; nothing is changed
        if formatted.value == source:
            return []
        lines = source.split("\n")
        end = lsp.Position(len(lines) - 1, _units(lines[-1], self.encoding))
        return [lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), end), new_text=formatted.value)]


def _check(path: Path, overlay: dict[Path, bytes], version) -> tuple[Optional[Analysis], str]:
    """A check that cannot take the server down: a bug in the compiler (or a
    buffer that exhausts it) becomes one diagnostic, and the server goes on."""
    try:
        return analyse(path, overlay, version), ""
    except (Exception, RecursionError, MemoryError) as exc:
        logger.exception("checking %s failed", path)
        return None, f"rbrc: internal error ({type(exc).__name__}) while checking this file; please report it"


def build_server() -> RbrServer:
    server = RbrServer()

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: RbrServer, params: lsp.DidOpenTextDocumentParams):
        ls.changed(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: RbrServer, params: lsp.DidChangeTextDocumentParams):
        ls.changed(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: RbrServer, params: lsp.DidCloseTextDocumentParams):
        ls.closed(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    async def hover(ls: RbrServer, params: lsp.HoverParams):
        uri = params.text_document.uri
        analysis = await ls.current(uri)
        if analysis is None:
            return None
        occ = analysis.at(*ls.place(analysis, uri, params.position)) or ls.route_at(analysis, uri, params.position)
        text = hover_text(analysis, occ) if occ is not None else None
        if text is None:
            return None
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text),
                         range=ls.range(occ.span, analysis))

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    async def definition(ls: RbrServer, params: lsp.DefinitionParams):
        found = await ls.occurrence(params.text_document.uri, params.position)
        if found is None:
            return None
        analysis, occ = found
        decl = analysis.declaration_of(occ.name)
        return ls.location(decl, analysis) if decl is not None else None

    @server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
    async def references(ls: RbrServer, params: lsp.ReferenceParams):
        found = await ls.occurrence(params.text_document.uri, params.position)
        if found is None:
            return None
        analysis, occ = found
        return [ls.location(o, analysis) for o in analysis.occurrences_of(occ.name)
                if params.context.include_declaration or not o.declaration]

    @server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
    async def prepare_rename(ls: RbrServer, params: lsp.PrepareRenameParams):
        found = await ls.occurrence(params.text_document.uri, params.position)
        if found is None:
            return None
        analysis, occ = found
        return lsp.PrepareRenamePlaceholder(range=ls.range(occ.span, analysis), placeholder=occ.name)

    @server.feature(lsp.TEXT_DOCUMENT_RENAME)
    async def rename(ls: RbrServer, params: lsp.RenameParams):
        found = await ls.occurrence(params.text_document.uri, params.position)
        if found is None:
            raise JsonRpcInvalidRequest("no policy name here to rename (or the file does not parse yet)")
        analysis, occ = found
        return lsp.WorkspaceEdit(changes=ls.rename_edits(analysis, occ, params.new_name))

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    async def document_symbols(ls: RbrServer, params: lsp.DocumentSymbolParams):
        analysis = await ls.current(params.text_document.uri)
        return ls.symbols(analysis, params.text_document.uri) if analysis is not None else None

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[" ", ">"]))
    def completion(ls: RbrServer, params: lsp.CompletionParams):
        doc = ls.doc(params.text_document.uri)
        if doc is None:
            return None
        # Names from the last check, even of older text: a half-typed line
        # does not parse, and the names around it are what is being typed.
        analysis = ls.analyses.get(params.text_document.uri)
        kinds = analysis.kinds if analysis is not None else {}
        items = suggestions(doc.source, doc.offset_at_position(params.position), kinds)
        return lsp.CompletionList(is_incomplete=False, items=[
            lsp.CompletionItem(label=s.label, kind=_KIND_COMPLETIONS[s.kind], detail=s.kind) for s in items])

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    async def formatting(ls: RbrServer, params: lsp.DocumentFormattingParams):
        return await asyncio.get_running_loop().run_in_executor(ls.executor, ls.format_edits,
                                                                params.text_document.uri)

    return server


def serve_stdio() -> None:
    logging.basicConfig(level=logging.WARNING, format="rbrc lsp: %(levelname)s %(message)s")
    build_server().start_io()
