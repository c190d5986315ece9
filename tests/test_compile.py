"""Codegen and the compiled folder: determinism, staleness, atomic writes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import rbrlang
from rbrlang.compiler import compile_path

from tests.support.files import ROOT, SAFETY, write
from tests.support.policies import MINIMAL


def test_committed_safety_output_is_fresh(rbrc):
    code, _, err = rbrc("compile", ROOT / "policies/safety.rbr", "-o", SAFETY, "--check")
    assert code == 0, err


def test_compile_reproduces_committed_bytes(tmp_path, rbrc):
    out = tmp_path / "safety"
    assert rbrc("compile", ROOT / "policies/safety.rbr", "-o", out)[0] == 0
    committed = sorted(p.relative_to(SAFETY) for p in SAFETY.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert fresh == committed
    for rel in fresh:
        assert (out / rel).read_bytes() == (SAFETY / rel).read_bytes(), rel


def test_output_does_not_depend_on_location(tmp_path):
    a = write(tmp_path / "one/p.rbr", MINIMAL)
    b = write(tmp_path / "two/deeper/p.rbr", MINIMAL)
    assert compile_path(a).files == compile_path(b).files


def test_check_detects_stale_and_extra_files(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "out"
    assert rbrc("compile", src, "-o", out)[0] == 0
    assert rbrc("compile", src, "-o", out, "--check")[0] == 0
    write(src, MINIMAL.replace("Is a?", "Is it a?"))
    code, _, err = rbrc("compile", src, "-o", out, "--check")
    assert code == 1 and "templates/a.jinja" in err and "policy.json" in err
    (out / "templates/zombie.jinja").write_text("x")
    write(src, MINIMAL)
    code, _, err = rbrc("compile", src, "-o", out, "--check")
    assert code == 1 and "zombie.jinja" in err


def test_failed_compile_leaves_previous_output_untouched(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "out"
    assert rbrc("compile", src, "-o", out)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    write(src, MINIMAL.replace("good = a and b", "good = a"))  # overlap: an error
    code, _, err = rbrc("compile", src, "-o", out)
    assert code == 1 and "E0107" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out", "p.rbr"]  # no temporary left


def test_failed_first_compile_creates_nothing(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", "rbr 1\ndefine x = \n")
    assert rbrc("compile", src, "-o", tmp_path / "out")[0] == 1
    assert not (tmp_path / "out").exists()


def test_recompile_keeps_fitted_weights(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "out"
    rbrc("compile", src, "-o", out)
    (out / "weights.json").write_text("{}")
    rbrc("compile", src, "-o", out)
    assert (out / "weights.json").read_text() == "{}"


def test_policy_json_contents(tmp_path):
    comp = compile_path(write(tmp_path / "p.rbr", MINIMAL))
    doc = json.loads(comp.files["policy.json"])
    assert doc["format"] == 1 and doc["policy"] == "p" and doc["compiler"] == rbrlang.__version__
    (rt,) = doc["response_types"]
    assert rt["features"] == ["a", "b", "good", "ok", "bad"]
    assert rt["classes"][0]["expr"] == {"and": ["a", "b"]}
    assert rt["classes"][0]["dd"]["variables"] == ["a", "b"]
    assert rt["labels"] == ["good", "ok", "bad"]
    assert doc["routes"] == {"C-R": "r"} and doc["default_route"] == "r"
    assert len(rt["schema_hash"]) == 64


def test_schema_hash_changes_with_meaning(tmp_path):
    def schema(text):
        return json.loads(compile_path(write(tmp_path / "p.rbr", text)).files["policy.json"])[
            "response_types"][0]["schema_hash"]
    base = schema(MINIMAL)
    assert schema(MINIMAL.replace("Is a?", "Is it a?")) != base  # question changed
    assert schema(MINIMAL.replace("route \"C-R\"", "route \"K-R\"")) == base  # routes are not features


def test_jinja_in_questions_and_examples_is_literal(tmp_path):
    text = MINIMAL.replace('question "Is a?"', 'question "Is {{ a }} {% raw %} {# a #}?"\n  example yes "{% endraw %}{{ 7*7 }}"')
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text))
    prompt = policy.render("a", [{"role": "user", "content": "{{ 7*7 }}"}], "{% if true %}x{% endif %}")
    assert "Question: Is {{ a }} {% raw %} {# a #}?" in prompt
    assert "ASSISTANT: {% endraw %}{{ 7*7 }}" in prompt
    assert "USER: {{ 7*7 }}" in prompt and "{% if true %}x{% endif %}" in prompt
    assert "49" not in prompt


def test_trainer_side_does_not_import_the_compiler():
    code = (
        "import sys, rbrlang\n"
        f"p = rbrlang.load_policy({str(SAFETY)!r})\n"
        "p.render('apology', [{'role': 'user', 'content': 'hi'}], 'sorry')\n"
        "bad = [m for m in sys.modules if m == 'lark' or m.startswith(('lark.', 'rbrlang.compiler', 'dd'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_copied_compiled_folder_loads_anywhere(tmp_path):
    shutil.copytree(SAFETY, tmp_path / "s")
    policy = rbrlang.load_policy(tmp_path / "s")
    assert len(policy.propositions) == 23


def _rows(text, tmp_path):
    doc = json.loads(compile_path(write(tmp_path / "p.rbr", text)).files["policy.json"])
    return doc["response_types"]


def test_every_class_row_has_a_score(tmp_path):
    (rt,) = _rows(MINIMAL, tmp_path)
    assert [c["score"] for c in rt["classes"]] == [1.0, 0.5, 0.0]  # evenly spaced, best first
    authored = MINIMAL.replace("  bad  = not a\n", "  bad  = not a\n  scores good 1, ok 0.7, bad 0.2\n")
    (rt2,) = _rows(authored, tmp_path)
    assert [c["score"] for c in rt2["classes"]] == [1.0, 0.7, 0.2]
    # Scores change no feature: weights fitted before still fit.
    assert rt2["schema_hash"] == rt["schema_hash"]
    one = MINIMAL.replace("classes good > ok > bad", "classes good > ok > bad > only").replace(
        'route default -> r', 'route default -> r\nresponse s {\n  only = a or not a\n}')
    assert [c["score"] for c in _rows(one, tmp_path)[1]["classes"]] == [1.0]  # one class scores 1


def test_committed_safety_policy_has_scores():
    doc = json.loads((SAFETY / "policy.json").read_text())
    for rt in doc["response_types"]:
        assert [c["score"] for c in rt["classes"]] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_explain_shows_scores_and_ranks(tmp_path, rbrc):
    text = MINIMAL.replace("  bad  = not a\n", "  bad  = not a\n  scores good 1, ok 0.7, bad 0.2\n"
                           "  rank good > {ok, bad}\n")  # rank labels are classes (issue 14, D7)
    code, out, err = rbrc("explain", write(tmp_path / "p.rbr", text))
    assert code == 0, err
    assert "  scores (reward before fitting): good 1, ok 0.7, bad 0.2\n" in out
    assert "  rank good > {ok, bad}\n" in out
    code, out, _ = rbrc("explain", SAFETY)
    assert ("  scores (reward before fitting, evenly spaced): ideal 1, minimum_acceptable_style 0.75, "
            "unacceptable 0.5, illogical 0.25, disallowed 0\n") in out
    assert "  rank ideal > minimum_acceptable_style > unacceptable > illogical > disallowed\n" in out


def test_recompile_over_fitted_files_it_cannot_read_warns_and_keeps_them(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "out"
    assert rbrc("compile", src, "-o", out)[0] == 0
    (out / "weights.json").write_text("not json")
    (out / "calibration.json").write_text('{"format": 1, "policy": "other", "method": "platt", "propositions": {}}')
    code, _, err = rbrc("compile", src, "-o", out)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("rbrc compile: warning: ")]
    assert len(warnings) == 2, err
    assert f"{out / 'weights.json'}: not valid JSON" in warnings[0] and warnings[0].endswith("; it was kept")
    assert warnings[1] == (f"rbrc compile: warning: {out / 'calibration.json'}: kept, but the policy cannot use it: "
                           "calibrates policy `other`, not `p`; `rbrc eval --gold FILE --calibrate` refits it")
    assert (out / "weights.json").read_text() == "not json"
    code, _, err = rbrc("compile", src, "-o", out, "--check")  # fitted files are not part of the staleness check
    assert code == 0 and "warning" not in err
