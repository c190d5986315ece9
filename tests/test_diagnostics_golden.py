"""Golden files pin every diagnostic's exact text: code, place, caret, help."""
from __future__ import annotations

from pathlib import Path

import pytest

from rbrlang import diagnostics as dg
from rbrlang.compiler.check import check_file

from tests.support.files import GOLDEN, ROOT, golden

CASES = sorted((GOLDEN / "diagnostics").glob("*.rbr"))
# Codes tested elsewhere because their input cannot live as a small text file.
ELSEWHERE = {"E0001": "test_cli", "E0002": "test_cli", "E0900": "formatter self-check",
             "E0200": "test_yaml_import", "E0201": "test_yaml_import", "E0300": "test_yaml_import",
             "E0301": "test_yaml_import", "E0302": "test_yaml_import", "E0303": "test_yaml_import",
             "E0304": "test_yaml_import", "E0305": "test_fit", "E0306": "test_fit", "E0307": "test_fit",
             "W0308": "test_fit", "W0309": "test_fit", "E0310": "test_fit",
             "E0311": "test_cli", "W0313": "test_fit", "W0314": "test_fit",
             **{c: "test_authoring" for c in ("E0400", "E0401", "E0402", "E0403", "E0404", "E0405", "E0406",
                                              "W0407", "W0408", "E0409", "E0420", "E0421")}}


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_diagnostic_golden(case: Path, monkeypatch):
    monkeypatch.chdir(case.parent)
    result = check_file(Path(case.name))
    diags, sources = result.diagnostics, result.sources
    assert diags, "every golden case must produce a diagnostic"
    code = case.stem.split("_")[0]
    assert code in {d.code for d in diags}, f"{case.name} should report {code}"
    rendered = dg.render_all(diags, sources) + "\n"

    golden(case.with_suffix(".expected"), rendered)


def test_every_code_has_a_golden_case():
    covered = {c.stem.split("_")[0] for c in CASES}
    missing = set(dg.CODES) - covered - set(ELSEWHERE)
    assert not missing, f"no golden case for {sorted(missing)}"


def test_every_diagnostic_has_location_and_help():
    for case in CASES:
        import os
        cwd = os.getcwd()
        os.chdir(case.parent)
        try:
            diags = check_file(Path(case.name)).diagnostics
        finally:
            os.chdir(cwd)
        for d in diags:
            assert d.span.line >= 1 and d.span.column >= 1, d
            assert d.help, f"{case.name}: {d.code} has no help line"
            assert d.code in dg.CODES


def _span(line: int, col: int, end: int):
    from rbrlang.source import Span
    return Span("p.rbr", line, col, line, end)


def test_render_escapes_control_characters_and_keeps_the_caret_under_the_place():
    # ESC (a terminal escape), a right-to-left override, a tab and a wide character
    # before the place; a BEL inside it; an ESC in the message itself.
    source = "rbr 1\nx = \x1b[31m\u202e\tq界 bad\x07 rest"
    col = source.split("\n")[1].index("bad") + 1
    d = dg.error("E0010", _span(2, col, col + 4), "unexpected `bad\x07` \x1b[2J", "help\x1b")
    text = dg.render(d, source)
    assert not any(ch in text for ch in "\x1b\u202e\x07"), text
    line, caret = text.split("\n")[2:4]
    assert line == "2 | x = \\u{1b}[31m\\u{202e}\tq界 bad\\u{7} rest"
    # Same width before the place on both lines (the tab stays a tab, `界` takes two columns).
    assert caret == "  | " + " " * len("x = \\u{1b}[31m\\u{202e}") + "\t" + " " * 4 + "^" * len("bad\\u{7}")
    assert "unexpected `bad\\u{7}` \\u{1b}[2J" in text and "help: help\\u{1b}" in text


def test_normalise_merges_the_same_message_at_the_same_place():
    a = dg.error("E0102", _span(3, 5, 6), "undefined name `x`", "did you mean `y`?")
    b = dg.error("E0102", _span(3, 5, 6), "undefined name `x`", "declare it")
    c = dg.error("E0102", _span(4, 5, 6), "undefined name `x`", "declare it")
    assert dg.normalise([c, b, a]) == [a, c] or dg.normalise([c, b, a]) == [b, c]
    assert len(dg.normalise([a, b, c])) == 2


def test_one_did_you_mean_for_names_and_keywords():
    assert dg.did_you_mean("questoin", ["question", "template", "example"]) == "did you mean `question`?"
    assert dg.did_you_mean("IDEAL", ["ideal", "bad"]) == "did you mean `ideal`?"
    assert dg.did_you_mean("zzz", ["question"]) == ""


def test_every_code_is_documented():
    import re

    table = (ROOT / "docs/LANGUAGE.md").read_text().split("## Diagnostic codes", 1)[1]
    documented: set[str] = set()
    for cell in re.findall(r"^\| ([EW][0-9][^|]*?) \|", table, re.M):
        for part in cell.split(", "):
            lo, _, hi = part.partition("–")
            if hi:  # a range: E0300–E0304
                documented |= {f"{lo[0]}{n:04d}" for n in range(int(lo[1:]), int(hi[1:]) + 1)}
            else:
                documented.add(part)
    assert set(dg.CODES) <= documented, sorted(set(dg.CODES) - documented)


def test_error_classes_render_lazily_and_the_base_modules_form_no_circle():
    import ast
    import pickle

    from rbrlang.errors import CompileError, SourceError

    d = dg.error("E0102", _span(1, 1, 2), "undefined name `x`", "declare it")
    exc = CompileError([d], {"p.rbr": "x"})
    assert exc.args == ([d], {"p.rbr": "x"})  # nothing rendered when raised
    assert str(exc) == dg.render(d, "x")
    again = pickle.loads(pickle.dumps(SourceError("E0001", "cannot read `p.rbr`", "check the path", _span(1, 1, 2))))
    assert (again.code, again.help, again.diagnostics) == ("E0001", "check the path", [again.diagnostic])

    def imported(name: str) -> set[str]:
        tree = ast.parse((ROOT / "rbrlang" / f"{name}.py").read_text(encoding="utf-8"))
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}

    # diagnostics is the leaf; errors builds on it, files on errors, source on
    # all three (files reads it bounded): no circle, not even through an import
    # inside a function.
    assert imported("diagnostics") == set()
    assert imported("errors") == {"diagnostics"}
    assert imported("files") == {"errors"}
    assert imported("source") == {"diagnostics", "errors", "files"}


def test_a_bad_bytes_place_counts_characters_not_bytes(monkeypatch):
    # Columns and offsets count characters everywhere else (`--format json`'s
    # `start` indexes the text); a byte count put the caret two columns right of
    # `\x{ff}` after two `é`s and the offset past it.
    case = GOLDEN / "diagnostics" / "E0003_not_utf8_after_accents.rbr"
    monkeypatch.chdir(case.parent)
    diags = check_file(Path(case.name)).diagnostics
    span = diags[0].span
    shown = case.read_bytes().decode("utf-8", dg.LOSSY)
    assert (span.line, span.column) == (3, 13)
    assert shown[span.start] == "\udcff"  # the bad byte, one character in the shown text
