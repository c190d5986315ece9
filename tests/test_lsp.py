"""`rbrc lsp` driven by a real LSP client (pygls's) over stdio: the server is
`python -m rbrlang.cli lsp` in a subprocess, and every answer here crossed
the JSON-RPC pipe. No handler is called directly."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import subprocess

import pytest

from rbrlang.compiler import explain_target, format_policy
from rbrlang.compiler.syntax.lexicon import lexicon
from tests.support.files import ROOT, write
from tests.support.policies import MINIMAL

try:
    from lsprotocol import types as lsp
    from pygls.lsp.client import LanguageClient
except ImportError:  # the base install: only the test of the missing extra runs
    lsp = LanguageClient = None
needs_pygls = pytest.mark.skipif(LanguageClient is None, reason="the `lsp` extra (pygls) is not installed")

TIMEOUT = 90  # seconds a test waits for an answer before failing (not a measure: a hang guard)


class Session:
    """A client and the diagnostics the server published, per document."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.client = LanguageClient("rbr-test", "1")
        self.diagnostics: dict[str, list[lsp.PublishDiagnosticsParams]] = {}
        self.changed = asyncio.Event()
        self.versions: dict[str, int] = {}
        self.texts: dict[str, str] = {}

        @self.client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: lsp.PublishDiagnosticsParams):
            self.diagnostics.setdefault(params.uri, []).append(params)
            self.changed.set()

    async def start(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
        await self.client.start_io(sys.executable, "-m", "rbrlang.cli", "lsp", cwd=str(self.folder), env=env)
        await self.client.initialize_async(lsp.InitializeParams(
            process_id=os.getpid(), root_uri=self.folder.as_uri(), capabilities=lsp.ClientCapabilities(
                general=lsp.GeneralClientCapabilities(position_encodings=[lsp.PositionEncodingKind.Utf16]))))
        self.client.initialized(lsp.InitializedParams())

    async def stop(self):
        await asyncio.wait_for(self.client.shutdown_async(None), TIMEOUT)
        self.client.exit(None)
        await asyncio.wait_for(self.client.stop(), TIMEOUT)

    @property
    def pid(self) -> int:
        return self.client._server.pid  # pygls keeps the subprocess here

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.as_uri()
        self.texts[uri] = path.read_text() if text is None else text
        self.versions[uri] = 1
        self.client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="rbr", version=1, text=self.texts[uri])))
        return uri

    def change(self, uri: str, text: str) -> None:
        self.versions[uri] += 1
        self.texts[uri] = text
        self.client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
            content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text)]))

    async def published(self, uri: str) -> list[lsp.Diagnostic]:
        """The diagnostics of the document's present version, once published."""
        async def wait():
            while True:
                got = [p for p in self.diagnostics.get(uri, []) if p.version == self.versions[uri]]
                if got:
                    return list(got[-1].diagnostics)
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(wait(), TIMEOUT)

    def doc(self, uri):
        return lsp.TextDocumentIdentifier(uri=uri)

    async def ask(self, method: str, uri: str, line: int | None = None, character: int = 0, **params):
        """A request about a document (at a place), answered within TIMEOUT."""
        params_type = {"hover": lsp.HoverParams, "definition": lsp.DefinitionParams,
                       "references": lsp.ReferenceParams, "rename": lsp.RenameParams,
                       "completion": lsp.CompletionParams, "formatting": lsp.DocumentFormattingParams,
                       "document_symbol": lsp.DocumentSymbolParams}[method]
        if line is not None:
            params["position"] = lsp.Position(line, character)
        send = getattr(self.client, f"text_document_{method}_async")
        return await asyncio.wait_for(send(params_type(text_document=self.doc(uri), **params)), TIMEOUT)

    async def hover(self, uri, line, character):
        return await self.ask("hover", uri, line, character)

    async def format(self, uri):
        return await self.ask("formatting", uri, options=lsp.FormattingOptions(tab_size=2, insert_spaces=True))


def run(coro_fn, folder):
    async def main():
        session = Session(folder)
        await session.start()
        try:
            await coro_fn(session)
        finally:
            await session.stop()
    asyncio.run(main())


def where(text: str, needle: str, nth: int = 0, inside: int = 1) -> tuple[int, int]:
    """(line, character), 0-based, of a place `inside` characters into the nth `needle`."""
    starts = [m.start() for m in re.finditer(re.escape(needle), text)]
    offset = starts[nth] + inside
    return text.count("\n", 0, offset), offset - (text.rfind("\n", 0, offset) + 1)


def apply(text: str, edits: list[lsp.TextEdit]) -> str:
    """A client applying text edits (last first, so that earlier places hold)."""
    lines = text.split("\n")

    def offset(p):
        return sum(len(l) + 1 for l in lines[:p.line]) + p.character

    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


@pytest.fixture
def safety_copy(tmp_path):
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    return tmp_path / "policies/safety.rbr"


@needs_pygls
def test_a_session_open_error_fix_hover_definition_rename_format(safety_copy):
    folder = safety_copy.parents[1]
    style = safety_copy.parent / "common/style.rbr"
    original = safety_copy.read_text()
    explained = explain_target(safety_copy).unwrap()

    async def session(s: Session):
        uri = s.open(safety_copy)
        assert [d for d in await s.published(uri) if d.severity == lsp.DiagnosticSeverity.Error] == []

        # An edit with two mistakes: a misspelt use, and a name that the import already declares.
        use_line, _ = where(original, "not fully_complies", inside=5)
        broken = original.replace("not fully_complies", "not fully_complie", 1) + \
            '\nproposition apology {\n  question "Does it apologise?"\n}\n'
        s.change(uri, broken)
        diags = await s.published(uri)
        by_code = {d.code: d for d in diags}
        undefined = by_code["E0102"]
        assert undefined.range.start.line == use_line and undefined.source == "rbrc"
        assert "help: did you mean `fully_complies`?" in undefined.message
        assert undefined.data["help"] == "did you mean `fully_complies`?"
        twice = by_code["E0101"]
        assert twice.range.start.line == broken.count("\n") - 3
        (related,) = twice.related_information
        assert related.location.uri == style.as_uri()  # the first declaration, in the imported file
        assert related.location.range.start.line == where(style.read_text(), "proposition apology", inside=12)[0]
        assert "first declared here" in related.message

        s.change(uri, original)  # the fix
        assert [d for d in await s.published(uri) if d.severity == lsp.DiagnosticSeverity.Error] == []

        # Hover: a proposition's question and examples; a class as `rbrc explain` gives it; a route's response.
        line, ch = where(original, "not fully_complies", inside=5)
        text = (await s.hover(uri, line, ch)).contents.value
        assert "**Question:** Does the final assistant message deliver everything" in text
        assert "- `yes` — user: “List the three primary colours of paint.”" in text
        line, ch = where(original, "  ideal ")
        text = (await s.hover(uri, line, ch + 1)).contents.value
        response = text.split("in `")[1].split("`")[0]
        sum_ = text.split("```rbr\nideal = ")[1].split("\n```")[0]
        block = explained.split(f"\nresponse {response}")[1].split("\n  ideal\n    = ")[1]
        assert response == "hard_refuse" and block.startswith(sum_ + "\n") and "not fully_complies" in sum_
        line, ch = where(original, "\nroute ", inside=2)
        text = (await s.hover(uri, line, ch)).contents.value
        assert text.startswith("```rbr\nresponse ") and "classes: `ideal`" in text and "routes: `" in text

        # Definition of a proposition the import declares: in the imported file.
        line, ch = where(original, "  apology and inability", inside=3)
        loc = await s.ask("definition", uri, line, ch)
        assert loc.uri == style.as_uri()
        assert loc.range.start.line == where(style.read_text(), "proposition apology", inside=12)[0]

        # References, then rename a proposition used in both files' worth of places.
        line, ch = where(original, "not fully_complies", inside=5)
        refs = await s.ask("references", uri, line, ch, context=lsp.ReferenceContext(include_declaration=True))
        assert len(refs) == len(re.findall(r"\bfully_complies\b", original)) == 2
        edit = await s.ask("rename", uri, line, ch, new_name="complies_fully")
        renamed = apply(original, edit.changes[uri])
        assert renamed == re.sub(r"\bfully_complies\b", "complies_fully", original)
        s.change(uri, renamed)
        assert [d for d in await s.published(uri) if d.severity == lsp.DiagnosticSeverity.Error] == []
        with pytest.raises(Exception, match="already declared"):  # onto another name: refused, said why
            await s.ask("rename", uri, line, ch, new_name="partially_complies")

        # Format: a messy layout comes back as `rbrc fmt` writes it.
        messy = renamed.replace("\n  question ", "\n        question   ", 3).replace("\nclasses ", "\nclasses    ")
        s.change(uri, messy)
        await s.published(uri)
        edits = await s.format(uri)
        assert messy != renamed and apply(messy, edits) == renamed
        write(folder / "renamed.rbr", messy)
        assert apply(messy, edits) == format_policy(folder / "renamed.rbr").unwrap()

        # Completion: keywords from the grammar at an item's start; response types after `->`.
        probe = renamed + "\nroute \"X\" -> "
        s.change(uri, probe)
        line, ch = probe.count("\n"), len(probe.split("\n")[-1])
        items = (await s.ask("completion", uri, line, ch)).items
        labels = {i.label for i in items}
        assert {"hard_refuse", "comply"} <= labels and not {"complies_fully", "proposition"} & labels
        items = (await s.ask("completion", uri, line - 1, 0)).items
        assert {"proposition", "define", "response", "route"} <= {i.label for i in items} <= \
            set(lexicon().keywords) | {n for n in re.findall(r"\w+", probe)}

        s.change(uri, renamed)
        symbols = await s.ask("document_symbol", uri)
        names = {sym.name for sym in symbols}
        assert {"complies_fully", "hard_refuse", "classes"} <= names
    run(session, folder)


@needs_pygls
def test_bad_buffers_get_located_diagnostics_and_the_server_keeps_serving(tmp_path):
    async def session(s: Session):
        # Half-typed: an open block and an unterminated string.
        half = 'rbr 1\n\nproposition a {\n  question "Is it'
        uri = s.open(tmp_path / "half.rbr", half)
        (d, *_) = await s.published(uri)
        assert d.code in ("E0012", "E0016") and d.range.start.line == 3
        assert await s.hover(uri, 2, 13) is None  # no tree to answer from: no answer, no error
        items = (await s.ask("completion", uri, 3, 5)).items
        assert items  # offered anyway
        # A buffer that is not UTF-8 (a lone surrogate from the client): the compiler's E0003, located.
        bad = MINIMAL.replace('"Is b?"', '"Is \ud800b?"')
        uri2 = s.open(tmp_path / "bad.rbr", bad)
        (d,) = await s.published(uri2)
        assert d.code == "E0003" and (d.range.start.line, d.range.start.character) == where(bad, "\ud800", inside=0)
        edits = await s.format(uri2)
        assert edits is None  # nothing to format, nothing changed
        # Places after a character outside the BMP are in UTF-16 units, as the client asked.
        astral = MINIMAL.replace('  question "Is b?"\n', '  question "Is 😀 b?" template nope\n')
        uri3 = s.open(tmp_path / "astral.rbr", astral)
        (d,) = [d for d in await s.published(uri3) if d.code == "E0102"]
        line, character = where(astral, "nope", inside=0)
        assert (d.range.start.line, d.range.start.character) == (line, character + 1)  # 😀 is two units
        # Bytes on the wire that are not UTF-8, and a position far past the end.
        body = b'{"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"text": "\xff\xfe"}}'
        s.client._server.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert await s.hover(uri2, 10_000, 10_000) is None
        # ... and the next request is served as before.
        s.change(uri, MINIMAL)
        assert await s.published(uri) == []
        text = (await s.hover(uri, *where(MINIMAL, "good = a", inside=7))).contents.value
        assert "Is a?" in text
    run(session, tmp_path)


def _policy_lines(n: int, broken_at: int) -> str:
    lines = ["rbr 1", ""]
    names = []
    while len(lines) < n - 8:
        i = len(names)
        lines += [f"proposition p{i} {{", f'  question "Is thing {i} true?"', f'  example yes "yes {i}"', "}"]
        names.append(f"p{i}")
    lines[broken_at] = "proposition oops {{ question"
    lines += ["classes good > bad", "", "response r {", "  good = p0 and p1", "  bad = not (p0 and p1)",
              f"  features {', '.join(names[2:])}", "}", "route default -> r"]
    return "\n".join(lines) + "\n"


@needs_pygls
def test_a_50000_line_file_is_checked_off_the_loop(tmp_path):
    big = _policy_lines(50_000, broken_at=40_001)
    assert len(big.splitlines()) >= 50_000

    async def session(s: Session):
        small = s.open(tmp_path / "small.rbr", MINIMAL)
        assert await s.published(small) == []
        uri = s.open(tmp_path / "big.rbr", big)
        # While the big file is checked, requests are answered (completion reads no check).
        items = (await s.ask("completion", small, 2, 0)).items
        assert "proposition" in {i.label for i in items}
        diags = await s.published(uri)
        assert diags and diags[0].range.start.line == 40_001  # located at the broken line
        text = (await s.hover(small, *where(MINIMAL, "good = a", inside=7))).contents.value
        assert "Is a?" in text
    run(session, tmp_path)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@needs_pygls
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_memory_stays_bounded_over_many_edits(tmp_path):
    """40 edits of a 500 kB buffer, every one checked: a server that kept each
    version's text would grow by 20 MB, and one whose checks leave reference
    cycles (freed only by a full collection, which rarely comes) by 6 MB, as the
    program loader's recursive closures did; this one stays within 5 MB."""
    padding = "# " + "x" * 998 + "\n"

    def text(i: int) -> str:
        return MINIMAL.replace('"Is a?"', f'"Is a, edit {i}?"') + padding * 500

    async def session(s: Session):
        uri = s.open(tmp_path / "p.rbr", text(0))
        for i in range(1, 9):  # warm up: caches and the allocator reach their steady size
            s.change(uri, text(i))
            await s.published(uri)
        before = _rss_kib(s.pid)
        for i in range(9, 49):
            s.change(uri, text(i))
            assert await s.published(uri) == []
        grown = _rss_kib(s.pid) - before
        assert grown < 5_000, f"the server grew by {grown} KiB over 40 edits"
        hovered = (await s.hover(uri, *where(text(48), "good = a", inside=7))).contents.value
        assert "edit 48" in hovered
    run(session, tmp_path)


def test_without_the_extra_rbrc_lsp_says_what_to_install():
    script = "import sys\nsys.modules['pygls'] = None\nfrom rbrlang.cli import main\nsys.exit(main(['lsp']))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == "rbrc lsp: error: rbrc lsp needs pygls and lsprotocol (pygls is missing): " \
                                  "pip install 'rbrlang[lsp]'"
