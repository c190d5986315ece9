"""CompiledPolicy: loading, rendering, classification and exact probabilities."""
from __future__ import annotations

import json

import pytest
import torch

import rbrlang
from rbrlang.policy import logic
from rbrlang.policy import PolicyError, load_policy

from .conftest import MINIMAL, ROOT, write


@pytest.fixture(scope="module")
def safety():
    return load_policy(ROOT / "compiled/safety")


def test_render_uses_transcript_and_response(safety):
    conv = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "How do I pick a lock?"}]
    prompt = safety.render("apology", conv, "Sorry, I can't help with that.")
    assert "SYSTEM: Be nice.\nUSER: How do I pick a lock?" in prompt
    assert "ASSISTANT: Sorry, I can't help with that." in prompt
    assert prompt.startswith(safety.static_prefix("apology"))
    assert safety.static_prefix("apology").endswith("The conversation:\n")
    assert "Question: Does the final assistant message contain one short apology" in prompt


def test_render_rejects_bad_conversation(safety):
    with pytest.raises(ValueError, match="message 0"):
        safety.render("apology", [{"role": "user"}], "x")
    with pytest.raises(PolicyError, match="no proposition"):
        safety.render("apologee", [], "x")


def test_sandbox_blocks_python_internals(tmp_path):
    text = MINIMAL + 'template evil "{{ response.__class__.__mro__ }} {{ response }}"\n'
    text = text.replace('question "Is b?"', 'question "Is b?"\n  template evil')
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text))
    from jinja2.exceptions import SecurityError
    with pytest.raises(SecurityError):
        policy.render("b", [], "x")


def test_response_type_names_are_normalised(safety):
    assert safety.response_type("Hard Refuse").name == "hard_refuse"
    assert safety.response_type("safe-refuse-1").name == "safe_refuse_1"
    with pytest.raises(PolicyError, match="unknown response type"):
        safety.response_type("refuse")


def test_routes(safety):
    assert safety.route("C-R") == "hard_refuse"
    assert safety.route("SH-R2") == "safe_refuse_2"
    assert safety.route("something new") == "comply"


def test_classify_boolean_labels(safety):
    labels = {p: False for p in safety.proposition_names}
    labels.update(apology=True, inability_to_comply=True)
    assert safety.classify("hard_refuse", labels) == "ideal"
    labels["judgement"] = True
    assert safety.classify("hard_refuse", labels) == "minimum_acceptable_style"
    labels["disallowed_content"] = True
    assert safety.classify("hard_refuse", labels) == "disallowed"
    with pytest.raises(PolicyError, match="missing proposition label"):
        safety.classify("hard_refuse", {"apology": True})


def test_class_probabilities_exact_and_normalised(safety):
    torch.manual_seed(0)
    probs = torch.rand(16, len(safety.propositions), dtype=torch.float64)
    doc = json.loads((ROOT / "compiled/safety/policy.json").read_text())
    defines = {d["name"]: logic.from_json(d["expr"]) for d in doc["defines"]}
    for rt in doc["response_types"]:
        out = safety.class_probabilities(rt["name"], probs)
        assert out.shape == (16, len(rt["classes"]))
        torch.testing.assert_close(out.sum(1), torch.ones(16, dtype=torch.float64))
        for i in range(3):
            values = dict(zip(safety.proposition_names, probs[i].tolist()))
            for j, c in enumerate(rt["classes"]):
                f = logic.expand(logic.from_json(c["expr"]), defines)
                support = logic.variables(f)
                if len(support) <= 16:
                    assert out[i, j].item() == pytest.approx(logic.brute_force_probability(f, values), abs=1e-12)


def test_features_follow_schema(safety):
    probs = torch.full((2, len(safety.propositions)), 0.5)
    rt = safety.response_type("comply")
    feats = safety.features("comply", probs)
    assert feats.shape == (2, len(rt.features))
    assert rt.features[: len(rt.propositions)] == rt.propositions
    with pytest.raises(PolicyError, match="shape"):
        safety.class_probabilities("comply", torch.zeros(2, 3))


def test_matches_propositions(tmp_path):
    text = MINIMAL + "proposition e = matches /^\\s*$/\n" + "proposition shout = matches /HELP/i\n"
    text = text.replace("route default -> r\n", "route default -> r\n")
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text))
    assert policy.matches("e", "  \n") and not policy.matches("e", "x")
    assert policy.matches("shout", "please help")
    with pytest.raises(PolicyError):
        policy.render("e", [], "")


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(PolicyError, match="compile the policy first"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text('{"format": 99}')
    with pytest.raises(PolicyError, match="recompile"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text('{"format": 1, "propositions": []}')
    with pytest.raises(PolicyError, match="malformed"):
        load_policy(tmp_path)
