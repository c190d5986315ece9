"""weights.json: written atomically, read back, bound to each response type's schema hash."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from rbrlang.errors import PolicyError
from rbrlang.policy import load_policy
from rbrlang.policy.weights import FittedWeights, read_weights, write_weights

from .conftest import MINIMAL, ROOT, write

SAFETY = ROOT / "compiled" / "safety"


def fitted(policy, name: str, scale: float = 1.0, data: str = "d" * 64) -> FittedWeights:
    rt = policy.response_type(name)
    return FittedWeights(response_type=rt.name, schema_hash=rt.schema_hash, features=rt.features,
                         weights=tuple(scale * (i + 1) / 10 for i in range(len(rt.features))), bias=-0.25,
                         margin=1.0, decay=1e-3, data_sha256=data, metrics={"pairs": 10, "val_error": 0.1})


@pytest.fixture
def safety(tmp_path):
    folder = tmp_path / "safety"
    shutil.copytree(SAFETY, folder)
    return folder


def test_unfitted_policy_has_no_weights(safety):
    assert dict(load_policy(safety).weights) == {}


def test_write_then_load_round_trips(safety):
    policy = load_policy(safety)
    fw = fitted(policy, "comply")
    path = write_weights(safety, policy, {"comply": fw})
    assert path == safety / "weights.json"
    loaded = load_policy(safety).weights
    assert set(loaded) == {"comply"}
    got = loaded["comply"]
    assert got == fw  # every field but metrics (not compared)
    assert dict(got.metrics) == {"pairs": 10, "val_error": 0.1}
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and doc["policy"] == "safety"
    assert doc["response_types"]["comply"]["schema_hash"] == policy.response_type("comply").schema_hash
    # atomic: nothing but the file itself is left beside it
    assert sorted(p.name for p in safety.iterdir() if "weights" in p.name) == ["weights.json"]
    # deterministic bytes
    before = path.read_bytes()
    write_weights(safety, policy, {"comply": fw})
    assert path.read_bytes() == before


def test_reward_uses_loaded_weights(safety):
    import torch

    policy = load_policy(safety)
    write_weights(safety, policy, [fitted(policy, "comply")])
    policy = load_policy(safety)
    fw = policy.weights["comply"]
    feats = torch.rand(4, len(fw.features), dtype=torch.float64)
    expected = feats @ torch.tensor(fw.weights, dtype=torch.float64) + fw.bias
    assert torch.allclose(policy.reward("comply", feats), expected)
    assert torch.allclose(policy.reward("comply", feats, rm_score=torch.ones(4)), expected + 1)


def test_writing_one_response_type_keeps_the_others(safety):
    policy = load_policy(safety)
    write_weights(safety, policy, [fitted(policy, "comply"), fitted(policy, "hard_refuse")])
    write_weights(safety, policy, [fitted(policy, "comply", scale=2.0)])
    loaded = read_weights(safety, policy)
    assert set(loaded) == {"comply", "hard_refuse"}
    assert loaded["comply"].weights[0] == pytest.approx(0.2)
    assert loaded["hard_refuse"].weights[0] == pytest.approx(0.1)


def test_weights_for_another_schema_name_both_hashes(safety):
    policy = load_policy(safety)
    path = write_weights(safety, policy, [fitted(policy, "comply")])
    doc = json.loads(path.read_text())
    stale = "0" * 64
    doc["response_types"]["comply"]["schema_hash"] = stale
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError) as err:
        load_policy(safety)
    message = str(err.value)
    assert stale in message and policy.response_type("comply").schema_hash in message
    assert "refit" in message and "weights.json" in message


def test_rewriting_drops_stale_entries(safety):
    policy = load_policy(safety)
    path = write_weights(safety, policy, [fitted(policy, "comply"), fitted(policy, "hard_refuse")])
    doc = json.loads(path.read_text())
    doc["response_types"]["hard_refuse"]["schema_hash"] = "f" * 64
    path.write_text(json.dumps(doc))
    write_weights(safety, policy, [fitted(policy, "comply")])
    assert set(read_weights(safety, policy)) == {"comply"}
    load_policy(safety)  # loads again: the stale entry is gone


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(policy="other"), "fitted for policy `other`"),
    (lambda d: d.update(format=99), "format 99"),
    (lambda d: d["response_types"].update(nope=d["response_types"]["comply"]), "response type `nope`"),
    (lambda d: d["response_types"]["comply"].update(weights=[1.0]), "do not match its features"),
    (lambda d: d["response_types"]["comply"].update(bias=None), "malformed entry"),
    (lambda d: d["response_types"]["comply"].update(weights=["x"] * 11), "malformed entry"),
    (lambda d: d.pop("response_types"), "not a weights file"),
])
def test_bad_weights_files_are_policy_errors(safety, edit, words):
    policy = load_policy(safety)
    path = write_weights(safety, policy, [fitted(policy, "comply")])
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError, match=re.escape(words)):
        load_policy(safety)


def test_weights_that_are_not_json(safety):
    (safety / "weights.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(safety)


def test_recompiling_an_unchanged_policy_keeps_weights(tmp_path, rbrc):
    out = tmp_path / "compiled"
    code, _, err = rbrc("compile", ROOT / "policies" / "safety.rbr", "-o", out)
    assert code == 0, err
    policy = load_policy(out)
    write_weights(out, policy, [fitted(policy, "comply")])
    before = (out / "weights.json").read_bytes()
    code, _, err = rbrc("compile", ROOT / "policies" / "safety.rbr", "-o", out)
    assert code == 0, err
    assert (out / "weights.json").read_bytes() == before
    assert set(load_policy(out).weights) == {"comply"}


def test_recompiling_a_changed_policy_fails_loudly_at_load(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "compiled"
    assert rbrc("compile", src, "-o", out)[0] == 0
    policy = load_policy(out)
    old_hash = policy.response_type("r").schema_hash
    write_weights(out, policy, [fitted(policy, "r")])
    # a new proposition in the class formulas changes the feature schema
    changed = MINIMAL.replace('proposition b {', 'proposition c {\n  question "Is c?"\n}\n\nproposition b {')
    changed = changed.replace("good = a and b", "good = a and b and c").replace("ok   = a and not b",
                                                                               "ok   = a and not (b and c)")
    write(src, changed)
    code, _, err = rbrc("compile", src, "-o", out)
    assert code == 0, err
    assert (out / "weights.json").exists()  # carried over, says itself what it fits
    with pytest.raises(PolicyError) as exc:
        load_policy(out)
    new_hash = json.loads((out / "policy.json").read_text())["response_types"][0]["schema_hash"]
    assert new_hash != old_hash
    assert old_hash in str(exc.value) and new_hash in str(exc.value)
