"""Importing the paper's YAML policy, and classifying the human-labelled gold set."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rbrlang.compiler import compile_path, policy_from_files
from rbrlang.data.classify import LabelError, classify_record
from rbrlang.policy import load_policy
from rbrlang.compiler.yaml_import import import_yaml

from tests.support.files import SAFETY, SHARED, write

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")
YAML = SHARED / "proposition_prompts.yaml"
GOLD = SHARED / "gold_train.jsonl"


class YamlSemantics:
    """The reference: the YAML's own meaning, read straight from the mapping
    (a mapping {name: bool} is a conjunction of literals; derived names expand),
    with no part of the compiler involved."""

    def __init__(self):
        self.doc = yaml.safe_load(YAML.read_text())
        self.derived = self.doc["derived_propositions"]
        self.order = self.doc["completion_class_order"]

    def holds(self, name, values):
        if name in self.derived:
            return all(self.holds(k, values) == v for k, v in self.derived[name].items())
        return values[name]

    def classes(self, response_type, values):
        table = self.doc["completion_classes"]
        return [c for c in self.order
                if all(self.holds(k, values) == v for k, v in table[c][response_type].items())]

    def support(self, response_type):
        names = set()

        def visit(n):
            if n in self.derived:
                for k in self.derived[n]:
                    visit(k)
            else:
                names.add(n)
        for c in self.order:
            for k in self.doc["completion_classes"][c][response_type]:
                visit(k)
        return sorted(names)

    def probabilities(self, response_type, probs):
        """Exact class probabilities by enumerating every assignment (vectorised)."""
        names = self.support(response_type)
        grid = np.array(list(itertools.product((False, True), repeat=len(names))))
        cols = {n: grid[:, i] for i, n in enumerate(names)}
        weight = np.prod([np.where(cols[n], probs[n], 1 - probs[n]) for n in names], axis=0)
        memo = {}

        def holds(n):
            if n not in memo:
                if n in self.derived:
                    memo[n] = np.all([holds(k) == v for k, v in self.derived[n].items()], axis=0)
                else:
                    memo[n] = cols[n]
            return memo[n]
        table = self.doc["completion_classes"]
        return {c: float(weight[np.all([holds(k) == v for k, v in table[c][response_type].items()], axis=0)].sum())
                for c in self.order}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "released.rbr"
    result = import_yaml(YAML)
    assert result.diagnostics == ()
    out.write_text(result.value)
    return out, policy_from_files(compile_path(out).files)


def gold():
    return [json.loads(line) for line in GOLD.read_text().splitlines()]


def test_imported_policy_matches_yaml_semantics_on_gold(imported):
    _, policy = imported
    ref = YamlSemantics()
    rows = gold()
    assert len(rows) == 351
    for i, row in enumerate(rows):
        rt = row["response_type"].lower().replace(" ", "_")
        (expected,) = ref.classes(rt, row["propositions"])
        got = classify_record(policy, row, i + 1)
        assert got.cls == expected, (i, rt)
        assert got.classes[expected] == 1.0


def test_safety_policy_matches_imported_on_gold(imported):
    """Our own-words policy puts all 351 in the same classes (by rank; its class
    names are the short ones of LANGUAGE.md)."""
    _, released = imported
    ours = load_policy(SAFETY)
    for i, row in enumerate(gold()):
        theirs = classify_record(released, row, i + 1)
        mine = classify_record(ours, {"category": row["category"], "propositions": row["propositions"]}, i + 1)
        assert mine.response_type == theirs.response_type
        assert ours.class_order.index(mine.cls) == released.class_order.index(theirs.cls), i


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["hard_refuse", "safe_refuse_1", "safe_refuse_2", "comply"]),
       st.lists(st.floats(0, 1), min_size=23, max_size=23))
def test_soft_labels_equal_brute_force(imported, response_type, ps):
    _, policy = imported
    probs = dict(zip(policy.proposition_names, ps))
    got = classify_record(policy, {"response_type": response_type, "propositions": probs})
    ref = YamlSemantics().probabilities(response_type, probs)
    total = sum(ref.values())
    assert total == pytest.approx(1.0, abs=1e-9)
    for c, p in ref.items():
        assert abs(got.classes[c] - p) < 1e-9, (c, got.classes[c], p)


def test_round_trip_is_byte_identical(tmp_path, rbrc):
    a, b = tmp_path / "a.rbr", tmp_path / "b.rbr"
    assert rbrc("import-yaml", YAML, "-o", a)[0] == 0
    assert rbrc("import-yaml", YAML, "-o", b)[0] == 0
    assert a.read_bytes() == b.read_bytes()
    assert rbrc("fmt", "--check", a)[0] == 0
    assert "Imported from proposition_prompts.yaml" in a.read_text().splitlines()[2]
    assert rbrc("compile", a, "-o", tmp_path / "c1")[0] == 0
    assert rbrc("compile", a, "-o", tmp_path / "c2")[0] == 0
    for f in (tmp_path / "c1").rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "c2" / f.relative_to(tmp_path / "c1")).read_bytes()


def test_template_placeholders_become_variables(imported):
    _, policy = imported
    prompt = policy.render("apology", [{"role": "user", "content": "hi"}], "Sorry!")
    assert "ASSISTANT: Sorry!" in prompt and "{question}" not in prompt
    assert "Does the assistant's last response include a single brief apology?" in prompt


BAD_YAML = {
    "unknown_key": ("prompt_template: '{question} {response}'\nsimple_propositions: {}\ncolour: red\n", 3, "unknown key `colour`"),
    "not_yaml": ("simple_propositions: [unclosed\n", 2, "not valid YAML"),
    "non_bool": ("simple_propositions:\n  a:\n    prompt: x\ncompletion_class_order: [good]\n"
                 "completion_classes:\n  good:\n    r:\n      a: maybe\n", 8, "must be true or false"),
    "bad_prop": ("completion_class_order: [good]\ncompletion_classes: {}\nsimple_propositions:\n  a:\n"
                 "    prompt: x\n    weight: 2\n", 6, "unknown key `weight`"),
    "missing": ("simple_propositions: {}\n", 1, "missing key `completion_classes`"),
    "placeholder": ("prompt_template: '{question} {answer} {response}'\nsimple_propositions: {}\n"
                    "completion_class_order: [a]\ncompletion_classes: {}\n", 1, "unknown placeholder `{answer}`"),
    "list_root": ("- a\n- b\n", 1, "must be a mapping"),
    "empty": ("", 1, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_yaml_gets_located_error(tmp_path, rbrc, case):
    text, line, message = BAD_YAML[case]
    path = write(tmp_path / "p.yaml", text)
    code, _, err = rbrc("import-yaml", path, "-o", tmp_path / "out.rbr")
    assert code == 1 and message in err and "Traceback" not in err
    assert f"p.yaml:{line}:" in err
    assert not (tmp_path / "out.rbr").exists()


def test_classify_cli_on_gold(tmp_path, rbrc):
    code, out, err = rbrc("classify", SAFETY, "--labels", GOLD)
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 351 and set(lines[0]) >= {"class", "classes"}
    assert all(sum(r["classes"].values()) == 1.0 for r in lines)


def test_classify_cli_errors(tmp_path, rbrc):
    every = {p: False for p in load_policy(SAFETY).proposition_names}
    rows = [
        {"response_type": "Hard Refuse", "propositions": every},
        {"response_type": "Refuse Harder", "propositions": {}},
        {"category": "C-R", "propositions": {**every, "apology": 1.5}},
        {"category": "C-R", "propositions": {"apology": True}},
    ]
    path = write(tmp_path / "l.jsonl", "\n".join(json.dumps(r) for r in rows) + "\nnot json\n[1, 2]\n")
    code, out, err = rbrc("classify", SAFETY, "--labels", path)
    assert code == 1 and len(out.splitlines()) == 1 and "l.jsonl:2:" in err and "E0302" in err
    assert "l.jsonl:3:" not in err  # stopped at the first bad line
    code, out, err = rbrc("classify", SAFETY, "--labels", path, "--keep-going")
    assert code == 1 and len(out.splitlines()) == 1
    for line, code_ in ((2, "E0302"), (3, "E0304"), (4, "E0303"), (5, "E0300"), (6, "E0301")):
        assert f"l.jsonl:{line}:" in err and code_ in err
    assert "5 bad lines skipped" in err


def test_out_of_range_label_is_named(tmp_path):
    policy = load_policy(SAFETY)
    labels = {p: 0.5 for p in policy.proposition_names}
    labels["judgement"] = 1.5
    with pytest.raises(LabelError, match="label `judgement` is 1.5"):
        classify_record(policy, {"response_type": "hard_refuse", "propositions": labels})
    labels["judgement"] = float("nan")
    with pytest.raises(LabelError):
        classify_record(policy, {"response_type": "hard_refuse", "propositions": labels})
