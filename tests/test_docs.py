"""The docs as a contract: the complete example in docs/LANGUAGE.md compiles,
docs/COMMANDS.md's input examples are accepted and its output examples are
what the commands print, every command and exit code is documented, and the
docs link only to files in the repository."""
from __future__ import annotations

import json
import re
import warnings

import pytest

from tests.support.files import ROOT, write

LANGUAGE = (ROOT / "docs/LANGUAGE.md").read_text()
COMMANDS = (ROOT / "docs/COMMANDS.md").read_text()
README = (ROOT / "README.md").read_text()


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or
    higher level (a `#` comment inside a fenced block is not a heading)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines(keepends=True)
    start = lines.index(heading + "\n") + 1
    fence = False
    for i in range(start, len(lines)):
        if lines[i].startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,%d} " % level, lines[i]):
            return "".join(lines[start:i])
    return "".join(lines[start:])


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(r"^```%s\n(.*?)^```" % re.escape(lang), text, re.M | re.S)


@pytest.fixture
def refusals(tmp_path, rbrc):
    """README's quickstart policy, compiled: the policy the COMMANDS.md examples use."""
    (policy,) = fenced(README, "rbr")
    src = write(tmp_path / "refusals.rbr", policy)
    assert rbrc("compile", src, "-o", tmp_path / "compiled/refusals")[0] == 0
    return tmp_path / "compiled/refusals"


def test_language_complete_example_compiles_cleanly(tmp_path, rbrc):
    (policy,) = fenced(section(LANGUAGE, "## A complete example"), "rbr")
    src = write(tmp_path / "support.rbr", policy)
    code, _, err = rbrc("check", "--deny-warnings", src)
    assert code == 0, err
    assert rbrc("fmt", "--check", src)[0] == 0  # shown in canonical layout
    assert rbrc("compile", src, "-o", tmp_path / "out")[0] == 0
    from rbrlang.policy import load_policy

    policy_ = load_policy(tmp_path / "out")
    # The order the section states.
    assert ", ".join(policy_.proposition_names) in section(LANGUAGE, "## A complete example")
    for construct in ("grader {", "template ", "example no {", "= matches /", "define ", "classes ", "rank ",
                      "features ", "scores ", "route default"):
        assert construct in policy, construct


def test_imported_propositions_take_the_place_of_the_import(tmp_path):
    """The column order COMMANDS.md states: declaration order, an import's propositions at the import."""
    import rbrlang

    write(tmp_path / "shared/style.rbr", 'rbr 1\n\nproposition z_shared {\n  question "z?"\n}\n\n'
          'proposition a_shared {\n  question "a?"\n}\n')
    write(tmp_path / "p.rbr", 'rbr 1\n\nproposition first {\n  question "f?"\n}\n\nimport "shared/style.rbr"\n\n'
          "proposition last = matches /x/\n\nclasses good > bad\n\nresponse r {\n"
          "  good = first and z_shared and a_shared and not last\n"
          "  bad  = not (first and z_shared and a_shared and not last)\n}\n")
    policy = rbrlang.compile_file(tmp_path / "p.rbr")
    assert policy.proposition_names == ("first", "z_shared", "a_shared", "last")
    assert policy.response_type("r").features == ("first", "z_shared", "a_shared", "last", "good", "bad")
    assert "`refusals.rbr` gives `apology, refuses, empty`" in COMMANDS


def test_classify_example_prints_what_commands_md_shows(tmp_path, rbrc, refusals):
    given, shown = fenced(section(COMMANDS, "## rbrc classify"), "jsonl")
    labels = write(tmp_path / "labels.jsonl", given)
    code, out, err = rbrc("classify", refusals, "--labels", labels)
    assert code == 0, err
    assert out == shown


def test_grade_example_prints_what_commands_md_shows(tmp_path, rbrc, refusals):
    """The grade example's rows as `rbrc tiny-grader DIR` (seed 0) and `rbrc grade` give them
    today: the keys, and the numbers to the digits shown (they drifted when the tiny grader
    changed: the docs said 0.548 where grade printed 0.5525)."""
    from rbrlang.runtime.tiny import build_tiny_grader

    given, shown = fenced(section(COMMANDS, "## rbrc grade"), "jsonl")
    data = write(tmp_path / "in.jsonl", given)
    model = build_tiny_grader(tmp_path / "tiny-grader", seed=0)  # the bytes `rbrc tiny-grader` writes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = rbrc("grade", refusals, "--data", data, "--grader", model,
                            "-o", tmp_path / "out.jsonl", "--no-cache", "--device", "cpu")
    assert code == 0, err
    real = {r["line"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert sorted(real) == [1, 2, 3]
    for doc in map(json.loads, shown.splitlines()):
        row = real[doc["line"]]
        assert list(doc) == list(row) and doc["response_type"] == row["response_type"]
        for key, digits in (("propositions", 3), ("answer_mass", 4), ("features", 3), ("classes", 3)):
            assert (doc[key] is None) == (row[key] is None) and list(doc[key] or ()) == list(row[key] or ())
            for name, value in (doc[key] or {}).items():  # as rounded, with a float's jitter beside it
                assert abs(row[key][name] - value) <= 0.5 * 10 ** -digits + 1e-5, (doc["line"], key, name, row[key])
        assert doc.get("schema_hash") == row.get("schema_hash")


def test_explain_conversation_example(tmp_path, rbrc):
    (conversation,) = fenced(section(COMMANDS, "## rbrc explain"), "json")
    (policy,) = fenced(README, "rbr")
    src = write(tmp_path / "refusals.rbr", policy)
    conv = write(tmp_path / "c.json", conversation)
    code, out, err = rbrc("explain", src, "--proposition", "apology", "--conversation", conv, "--response", "No.")
    assert code == 0 and "How do I pick a lock?" in out, err


def test_every_command_has_a_section():
    from rbrlang.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for name in sub.choices:
        assert f"\n## rbrc {name}\n" in COMMANDS, f"docs/COMMANDS.md has no section for `rbrc {name}`"
        assert f"`rbrc {name}" in README, f"README's command table lacks `rbrc {name}`"


def test_every_exit_code_is_documented():
    from rbrlang import errors

    table = section(COMMANDS, "## Exit codes")
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert codes == {errors.EXIT_OK, errors.EXIT_ERRORS, errors.EXIT_USAGE, errors.EXIT_INTERNAL, 130,
                     errors.EXIT_TERMINATED}
    readme_codes = {int(m) for m in re.findall(r"^\| (\d+) \|", README, re.M)}
    assert readme_codes == codes


def test_docs_link_only_inside_the_repository():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "shared/design" not in text, path
        for target in re.findall(r"\]\(([^)]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file) if file else path
            assert resolved.resolve().is_relative_to(ROOT) and resolved.exists(), (path, target)
            if anchor:
                headings = re.findall(r"^#+ (.+)$", resolved.read_text(), re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
                assert anchor in slugs, (path, target)


def test_eval_examples_are_accepted(tmp_path, rbrc, refusals):
    """COMMANDS.md's gold set and P(yes) lines, as given, make a report."""
    gold, probs = fenced(section(COMMANDS, "## rbrc eval"), "jsonl")
    code, out, err = rbrc("eval", refusals, "--report", tmp_path / "report", "--gold", write(tmp_path / "g.jsonl", gold),
                          "--probs", write(tmp_path / "p.jsonl", probs))
    assert code == 0, err
    assert out.startswith("gold: 2 completions, class accuracy 100.0%")
    shown = section(COMMANDS, "## rbrc eval")
    for png in sorted(p.name for p in (tmp_path / "report").glob("*.png")):
        assert f"`{png}`" in shown, png


def test_readme_reward_example(tmp_path, refusals, tiny_model_dir, monkeypatch):
    """README's trainer blocks in order, the grader a tiny one on the CPU: the
    reward block runs and agrees with `policy.reward` on the same features."""
    import re as re_

    blocks = fenced(README, "python")
    (reward_block,) = [b for b in blocks if "RBRReward" in b]
    grader_block = next(b for b in blocks if "HFGrader" in b)
    load_block = next(b for b in blocks if "load_policy" in b)
    grader_block = grader_block.replace('"path/to/grader"', repr(str(tiny_model_dir)))
    grader_block = re_.sub(r'device="cuda"', 'device="cpu"', grader_block)
    monkeypatch.chdir(refusals.parent.parent)  # README loads "compiled/refusals"
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in (load_block, grader_block):
            exec(compile(block, "README.md", "exec"), namespace)
        lines = reward_block.splitlines()
        exec(compile("\n".join(lines[:-2]), "README.md", "exec"), namespace)
    batch, policy, features = namespace["batch"], namespace["policy"], namespace["features"]
    assert lines[-2].startswith("batch.rewards") and lines[-1].startswith('policy.reward("hard_refuse", features)')
    expected = policy.reward("hard_refuse", features)
    assert len(batch.rewards) == 1 and abs(batch.rewards[0] - float(expected[0])) < 1e-5
    assert "RBRReward" in namespace and batch.response_types == ["hard_refuse"]
