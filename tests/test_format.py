"""The formatter: golden input → output pairs, idempotence, comments kept."""
from __future__ import annotations

from pathlib import Path

import pytest

from rbrlang.compiler.fmt import format_source
from rbrlang.source import SourceFile, read_source
from rbrlang.compiler.syntax.parser import parse_source

from tests.support.files import GOLDEN, ROOT, golden, write

CASES = sorted((GOLDEN / "format").glob("*.rbr"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_format_golden(case: Path):
    src = read_source(case, case.name)
    result = format_source(src)
    assert result.value is not None, result.diagnostics
    golden(case.with_suffix(".rbr.formatted"), result.value)
    # Idempotent, and the same tree with the same comments.
    again = format_source(SourceFile(case, case.name, result.value))
    assert again.value == result.value
    before = parse_source(src).value
    after = parse_source(SourceFile(case, case.name, result.value)).value
    assert before == after
    assert [c.text for c in before.comments] == [c.text for c in after.comments]


@pytest.mark.parametrize("policy", ["policies/safety.rbr", "policies/common/style.rbr"])
def test_shipped_policies_are_formatted(policy):
    src = read_source(ROOT / policy, policy)
    assert format_source(src).value == src.text


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
    code, _, err = rbrc("fmt", path)  # nothing to do: said, not silent
    assert code == 0 and err == "1 file already formatted\n"


def test_fmt_refuses_broken_file_and_leaves_it(tmp_path, rbrc):
    path = write(tmp_path / "p.rbr", "rbr 1\ndefine x = (a\n")
    code, _, err = rbrc("fmt", path)
    assert code == 1 and "E0016" in err
    assert path.read_text() == "rbr 1\ndefine x = (a\n"


@pytest.mark.parametrize("text", [
    "# Title\nrbr 1\n",
    "#!/usr/bin/env rbrc\n# licence\n\nrbr 1  # version\n\ndefine x = a\n",
    "\n# first\n\n\n# second\nrbr 1\n# below\ndefine x = a\n",
])
def test_comment_before_header_stays_above_it(text):
    result = format_source(SourceFile(Path("p.rbr"), "p.rbr", text))
    assert result.diagnostics == () and result.value is not None  # no E0900
    head = text[:text.index("rbr 1")]
    out_head = result.value[:result.value.index("rbr 1")]
    comments = [line for line in head.splitlines() if line.startswith("#")]
    assert comments and [line for line in out_head.splitlines() if line] == comments
    assert format_source(SourceFile(Path("p.rbr"), "p.rbr", result.value)).value == result.value


def test_scores_line_is_printed_canonically():
    text = "rbr 1\nresponse r {\n  scores   good 1 ,ok .5,\n    bad -2e-1\n}\n"
    result = format_source(SourceFile(Path("p.rbr"), "p.rbr", text))
    assert result.value == "rbr 1\n\nresponse r {\n  scores good 1, ok .5, bad -2e-1\n}\n"
