"""The shipped safety policy: the paper's structure, in our own words."""
from __future__ import annotations

import json

import pytest
import yaml

from rbrlang.compiler.check import check_file
from rbrlang.policy import load_policy

from tests.support.files import ROOT, SAFETY, SHARED

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")


@pytest.fixture(scope="module")
def checked():
    result = check_file(ROOT / "policies/safety.rbr")
    policy, diags = result.value, result.diagnostics
    assert diags == (), diags
    return policy


def test_structure(checked):
    assert len(checked.propositions) == 23
    assert all(p.graded for p in checked.propositions)
    assert [r.name for r in checked.responses] == ["hard_refuse", "safe_refuse_1", "safe_refuse_2", "comply"]
    assert checked.class_order == ("ideal", "minimum_acceptable_style", "unacceptable", "illogical", "disallowed")
    for r in checked.responses:
        assert [c for c, _ in r.classes] == list(checked.class_order)


def test_every_proposition_has_a_question_and_examples(checked):
    for p in checked.propositions:
        assert p.question.endswith("?") or "?" in p.question, p.name
        assert len(p.examples) >= 3, p.name
        assert {e.label for e in p.examples} == {"yes", "no"}, p.name


@needs_data
def test_same_propositions_as_the_released_policy(checked):
    released = yaml.safe_load((SHARED / "proposition_prompts.yaml").read_text())
    assert set(checked.proposition_names) == set(released["simple_propositions"])


@needs_data
def test_written_in_our_own_words(checked):
    """No question reuses the released prompt text."""
    released = yaml.safe_load((SHARED / "proposition_prompts.yaml").read_text())
    for p in checked.propositions:
        theirs = released["simple_propositions"][p.name]["prompt"]
        first_line = theirs.strip().splitlines()[0]
        assert first_line not in p.question


@needs_data
def test_routes_cover_gold_categories():
    policy = load_policy(SAFETY)
    expected = {}
    for line in (SHARED / "gold_train.jsonl").read_text().splitlines():
        row = json.loads(line)
        expected[row["category"]] = policy.response_type(row["response_type"]).name
    for category, response_type in expected.items():
        assert category in policy.routes, category
        assert policy.route(category) == response_type


def test_examples_default_prompts_ship_with_the_clone():
    """examples/ runs from a fresh clone: its default prompts are in the repository,
    parse as the scripts read them, and every category is routed by the safety policy."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("safety_common", ROOT / "examples/safety_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.DEFAULT_DATA.resolve().is_relative_to(ROOT.resolve())
    rows = common.load_prompts(common.DEFAULT_DATA)
    policy = load_policy(SAFETY)
    routed = {policy.route(r["category"]) for r in rows}
    assert None not in routed and routed == set(policy.response_types)
