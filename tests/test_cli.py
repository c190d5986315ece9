"""rbrc end to end on bad and good input: located diagnostics, exit codes,
never a traceback."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from .conftest import MINIMAL, ROOT, write

LOCATED = re.compile(r"^\S+:\d+:\d+: (error|warning)\[[EW]\d{4}\]: ", re.M)

BAD_INPUTS = {
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "unterminated": b'rbr 1\nproposition a {\n  question "never closed\n}\n',
    "unterminated_block": b'rbr 1\ntemplate t """\n  no end\n',
    "no_header": b'proposition a {\n  question "x"\n}\n',
    "unknown_construct": b"rbr 1\nrule a = b\n",
    "deep_parens": b"rbr 1\ndefine x = " + b"(" * 5000 + b"a" + b")" * 5000 + b"\n",
    "deep_not": b"rbr 1\ndefine x = " + b"not " * 5000 + b"a\n",
    "latin1": b'rbr 1\npolicy p "caf\xe9"\n',
    "missing_import": b'rbr 1\nimport "gone.rbr"\n',
    "only_comment": b"# nothing here\n",
    "huge": b"rbr 1\n" + b"# padding\n" * (1024 * 1024),  # 10 MB
    "long_chain": b"rbr 1\ndefine x = " + b" and ".join(b"a%d" % i for i in range(3000)) + b"\n",
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_gets_located_diagnostic_and_exit_1(tmp_path, name, rbrc):
    path = tmp_path / f"{name}.rbr"
    path.write_bytes(BAD_INPUTS[name])
    for cmd in (("check",), ("compile", "-o", tmp_path / "out")):
        code, out, err = rbrc(cmd[0], path, *cmd[1:])
        assert code == 1, (name, err)
        assert LOCATED.search(err), err
        assert "Traceback" not in err and "help:" in err
    assert not (tmp_path / "out").exists()


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    path = tmp_path / "bad.rbr"
    path.write_bytes(BAD_INPUTS["deep_not"])
    proc = subprocess.run([sys.executable, "-m", "rbrlang.cli", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "E0015" in proc.stderr


def test_missing_file_and_folder(tmp_path, rbrc):
    code, _, err = rbrc("check", tmp_path / "nope.rbr")
    assert code == 1 and "E0001" in err
    code, _, err = rbrc("compile", tmp_path)
    assert code == 1 and "E0001" in err and "folder" in err


def test_too_large_file(tmp_path, rbrc):
    path = tmp_path / "big.rbr"
    path.write_bytes(b"rbr 1\n" + b"#" * (3 * 1024 * 1024))
    code, _, err = rbrc("check", path)
    assert code == 1 and "E0002" in err


def test_usage_errors_exit_2(tmp_path, rbrc):
    with pytest.raises(SystemExit) as exc:
        rbrc("compile")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        rbrc("frobnicate")
    assert exc.value.code == 2
    src = write(tmp_path / "p.rbr", MINIMAL)
    code, _, err = rbrc("explain", src, "--proposition", "zzz")
    assert code == 2 and "no proposition `zzz`" in err


def test_json_format(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL.replace("good = a and b", "good = a and bb"))
    code, out, _ = rbrc("check", "--format", "json", src)
    assert code == 1
    (d,) = json.loads(out)
    assert d["code"] == "E0102" and d["severity"] == "error" and d["span"]["line"] == 14
    assert d["help"] == "did you mean `b`?"


def test_several_errors_sorted(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL.replace("good = a and b", "good = x and b") + 'route "Q" -> nope\n')
    code, _, err = rbrc("check", src)
    lines = [int(m.group(1)) for m in re.finditer(r"p\.rbr:(\d+):", err)]
    assert code == 1 and len(lines) == 2 and lines == sorted(lines)


def test_warnings_pass_unless_denied(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL + 'proposition c {\n  question "c?"\n}\n')
    code, _, err = rbrc("check", src)
    assert code == 0 and "W0105" in err
    assert rbrc("check", "--deny-warnings", src)[0] == 1


def test_explain_safety(rbrc):
    code, out, _ = rbrc("explain", ROOT / "compiled/safety")
    assert code == 0
    assert "response hard_refuse  (routes: C-R, H-R, K-R)" in out
    assert "  disallowed\n    = disallowed_content\n" in out
    assert "illogical\n    = illogical_continuation_of_prompt and not disallowed_content" in out
    same = rbrc("explain", ROOT / "policies/safety.rbr")[1]
    assert same == out


def test_explain_proposition_prompt(tmp_path, rbrc):
    conv = write(tmp_path / "c.json", json.dumps([{"role": "user", "content": "Hello there"}]))
    code, out, _ = rbrc("explain", ROOT / "policies/safety.rbr", "--proposition", "apology",
                        "--conversation", conv, "--response", "Sorry!")
    assert code == 0 and "USER: Hello there" in out and "ASSISTANT: Sorry!" in out
    assert "Example 1:" in out


def test_explain_sum_of_products_is_equivalent():
    """Explain's sums of products mean exactly the class formulas."""
    import random

    from rbrlang.compiler.proofs import Space
    from rbrlang.compiler.explain import sum_of_products
    from rbrlang.policy import load_policy

    policy = load_policy(ROOT / "compiled/safety")
    space = Space(policy.proposition_names)
    rng = random.Random(0)
    for rt in policy.response_types.values():
        for dd in rt.diagrams:
            text = sum_of_products(space, dd).replace("\n", " ")
            terms = [t.strip().strip("()") for t in text.split(" or ")]
            for _ in range(300):
                values = {p: rng.random() < 0.5 for p in policy.proposition_names}
                printed = any(all((not values[lit[4:]]) if lit.startswith("not ") else values[lit]
                                  for lit in term.split(" and ")) for term in terms)
                assert printed == dd.evaluate(values), text
