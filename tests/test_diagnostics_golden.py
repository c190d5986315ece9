"""Golden files pin every diagnostic's exact text: code, place, caret, help."""
from __future__ import annotations

from pathlib import Path

import pytest

from rbrlang import diagnostics as dg
from rbrlang.compiler.check import check_file

from .conftest import GOLDEN, golden

CASES = sorted((GOLDEN / "diagnostics").glob("*.rbr"))
# Codes tested elsewhere because their input cannot live as a small text file.
ELSEWHERE = {"E0001": "test_cli", "E0002": "test_cli", "E0900": "formatter self-check",
             "E0200": "test_yaml_import", "E0201": "test_yaml_import", "E0300": "test_yaml_import",
             "E0301": "test_yaml_import", "E0302": "test_yaml_import", "E0303": "test_yaml_import",
             "E0304": "test_yaml_import"}


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_diagnostic_golden(case: Path, monkeypatch):
    monkeypatch.chdir(case.parent)
    _, diags, sources = check_file(Path(case.name))
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
            _, diags, _ = check_file(Path(case.name))
        finally:
            os.chdir(cwd)
        for d in diags:
            assert d.span.line >= 1 and d.span.column >= 1, d
            assert d.help, f"{case.name}: {d.code} has no help line"
            assert d.code in dg.CODES
