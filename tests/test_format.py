"""The formatter: golden input → output pairs, idempotence, comments kept."""
from __future__ import annotations

from pathlib import Path

import pytest

from rbrlang.compiler.fmt import format_source
from rbrlang.source import SourceFile, read_source
from rbrlang.compiler.syntax.parser import parse_source

from .conftest import GOLDEN, ROOT, golden, write

CASES = sorted((GOLDEN / "format").glob("*.rbr"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_format_golden(case: Path):
    src = read_source(case, case.name)
    result = format_source(src)
    assert result.text is not None, result.diagnostics
    golden(case.with_suffix(".rbr.formatted"), result.text)
    # Idempotent, and the same tree with the same comments.
    again = format_source(SourceFile(case, case.name, result.text))
    assert again.text == result.text
    before = parse_source(src).module
    after = parse_source(SourceFile(case, case.name, result.text)).module
    assert before == after
    assert [c.text for c in before.comments] == [c.text for c in after.comments]


@pytest.mark.parametrize("policy", ["policies/safety.rbr", "policies/common/style.rbr"])
def test_shipped_policies_are_formatted(policy):
    src = read_source(ROOT / policy, policy)
    assert format_source(src).text == src.text


def test_fmt_cli_check_diff_and_write(tmp_path, rbrc):
    path = write(tmp_path / "p.rbr", "rbr 1\ndefine   x=a  and b\n")
    code, out, err = rbrc("fmt", "--check", path)
    assert code == 1 and "not formatted" in err
    code, out, err = rbrc("fmt", "--diff", path)
    assert code == 1 and "+define x = a and b" in out
    assert path.read_text() == "rbr 1\ndefine   x=a  and b\n"  # --diff writes nothing
    code, out, err = rbrc("fmt", path)
    assert code == 0 and path.read_text() == "rbr 1\n\ndefine x = a and b\n"
    assert rbrc("fmt", "--check", path)[0] == 0


def test_fmt_refuses_broken_file_and_leaves_it(tmp_path, rbrc):
    path = write(tmp_path / "p.rbr", "rbr 1\ndefine x = (a\n")
    code, _, err = rbrc("fmt", path)
    assert code == 1 and "E0016" in err
    assert path.read_text() == "rbr 1\ndefine x = (a\n"
