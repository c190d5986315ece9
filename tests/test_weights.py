"""weights.json: written atomically, read back, bound to each response type's schema hash."""
from __future__ import annotations

import json
import re

import pytest

from rbrlang.errors import PolicyError
from rbrlang.policy import load_policy
from rbrlang.policy.weights import FittedWeights, read_weights, write_weights

from tests.support.files import ROOT, write
from tests.support.policies import MINIMAL


def fitted(policy, name: str, scale: float = 1.0, data: str = "d" * 64) -> FittedWeights:
    rt = policy.response_type(name)
    return FittedWeights(response_type=rt.name, schema_hash=rt.schema_hash, features=rt.features,
                         weights=tuple(scale * (i + 1) / 10 for i in range(len(rt.features))), bias=-0.25,
                         margin=1.0, decay=1e-3, data_sha256=data, metrics={"pairs": 10, "val_error": 0.1})


def test_unfitted_policy_has_no_weights(safety_dir):
    assert dict(load_policy(safety_dir).weights) == {}


def test_write_then_load_round_trips(safety_dir):
    policy = load_policy(safety_dir)
    fw = fitted(policy, "comply")
    path = write_weights(safety_dir, policy, {"comply": fw})
    assert path == safety_dir / "weights.json"
    loaded = load_policy(safety_dir).weights
    assert set(loaded) == {"comply"}
    got = loaded["comply"]
    assert got == fw  # every field but metrics (not compared)
    assert dict(got.metrics) == {"pairs": 10, "val_error": 0.1}
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and doc["policy"] == "safety"
    assert doc["response_types"]["comply"]["schema_hash"] == policy.response_type("comply").schema_hash
    # atomic: nothing but the file itself is left beside it
    assert sorted(p.name for p in safety_dir.iterdir() if "weights" in p.name) == ["weights.json"]
    # deterministic bytes
    before = path.read_bytes()
    write_weights(safety_dir, policy, {"comply": fw})
    assert path.read_bytes() == before


def test_reward_uses_loaded_weights(safety_dir):
    import torch

    policy = load_policy(safety_dir)
    write_weights(safety_dir, policy, [fitted(policy, "comply")])
    policy = load_policy(safety_dir)
    fw = policy.weights["comply"]
    feats = torch.rand(4, len(fw.features), dtype=torch.float64)
    expected = feats @ torch.tensor(fw.weights, dtype=torch.float64) + fw.bias
    assert torch.allclose(policy.reward("comply", feats), expected)
    assert torch.allclose(policy.reward("comply", feats, rm_score=torch.ones(4)), expected + 1)


def test_writing_one_response_type_keeps_the_others(safety_dir):
    policy = load_policy(safety_dir)
    write_weights(safety_dir, policy, [fitted(policy, "comply"), fitted(policy, "hard_refuse")])
    write_weights(safety_dir, policy, [fitted(policy, "comply", scale=2.0)])
    loaded = read_weights(safety_dir, policy)
    assert set(loaded) == {"comply", "hard_refuse"}
    assert loaded["comply"].weights[0] == pytest.approx(0.2)
    assert loaded["hard_refuse"].weights[0] == pytest.approx(0.1)


def test_weights_for_another_schema_name_both_hashes(safety_dir):
    policy = load_policy(safety_dir)
    path = write_weights(safety_dir, policy, [fitted(policy, "comply")])
    doc = json.loads(path.read_text())
    stale = "0" * 64
    doc["response_types"]["comply"]["schema_hash"] = stale
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError) as err:
        load_policy(safety_dir)
    message = str(err.value)
    assert stale in message and policy.response_type("comply").schema_hash in message
    assert "refit" in message and "weights.json" in message


def test_rewriting_drops_stale_entries(safety_dir):
    policy = load_policy(safety_dir)
    path = write_weights(safety_dir, policy, [fitted(policy, "comply"), fitted(policy, "hard_refuse")])
    doc = json.loads(path.read_text())
    doc["response_types"]["hard_refuse"]["schema_hash"] = "f" * 64
    path.write_text(json.dumps(doc))
    write_weights(safety_dir, policy, [fitted(policy, "comply")])
    assert set(read_weights(safety_dir, policy)) == {"comply"}
    load_policy(safety_dir)  # loads again: the stale entry is gone


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(policy="other"), "fitted for policy `other`"),
    (lambda d: d.update(format=99), "format 99"),
    (lambda d: d["response_types"].update(nope=d["response_types"]["comply"]), "response type `nope`"),
    (lambda d: d["response_types"]["comply"].update(weights=[1.0]), "do not match its features"),
    (lambda d: d["response_types"]["comply"].update(bias=None), "malformed entry"),
    (lambda d: d["response_types"]["comply"].update(weights=["x"] * 11), "malformed entry"),
    (lambda d: d.pop("response_types"), "not a weights file"),
])
def test_bad_weights_files_are_policy_errors(safety_dir, edit, words):
    policy = load_policy(safety_dir)
    path = write_weights(safety_dir, policy, [fitted(policy, "comply")])
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError, match=re.escape(words)):
        load_policy(safety_dir)


def test_weights_that_are_not_json(safety_dir):
    (safety_dir / "weights.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(safety_dir)


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


# --- the edit–recompile–refit loop (issue 14, D2): fitting owns weights.json ------------------------------------
def _comparisons(path):
    """Two prompts of MINIMAL's `r`, each a good, an ok and a bad completion, P(yes) given."""
    rows = [{"prompt": [{"role": "user", "content": p}], "completion": f"{label} answer to {p}", "response_type": "r",
             "completion_label": label, "propositions": {"a": a, "b": b}, "rm_score": rm}
            for p in ("p1", "p2", "p3")
            for label, a, b, rm in (("good", 0.9, 0.9, 0.1), ("ok", 0.9, 0.1, 0.3), ("bad", 0.1, 0.5, 0.2))]
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _only(err: str, start: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(start)]


def test_edit_recompile_then_classify_grade_eval_and_fit_all_work(tmp_path, rbrc, tiny_model_dir):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "compiled"
    data = _comparisons(tmp_path / "c.jsonl")
    assert rbrc("compile", src, "-o", out)[0] == 0
    code, _, err = rbrc("fit", out, "--data", data, "--decay", "0.01")
    assert code == 0, err
    old = load_policy(out).response_type("r").schema_hash
    assert not _only(err, f"{out / 'weights.json'}:")  # nothing stale to replace the first time

    write(src, MINIMAL.replace('"Is a?"', '"Is it a?"'))  # one question edited: a new prompt, a new schema
    code, _, err = rbrc("compile", src, "-o", out)
    assert code == 0, err
    new = json.loads((out / "policy.json").read_text())["response_types"][0]["schema_hash"]
    assert new != old and (out / "weights.json").exists()  # kept: fitting owns it
    assert _only(err, "rbrc compile: warning:") == [
        f"rbrc compile: warning: {out / 'weights.json'}: kept, but the policy cannot use it: `r`: fitted for schema "
        f"{old}, but the policy's schema is now {new} (its features changed); `rbrc fit` refits it"]

    # commands that need no weights never refuse over stale ones
    labels = write(tmp_path / "l.jsonl", '{"response_type": "r", "propositions": {"a": true, "b": false}}\n')
    code, stdout, err = rbrc("classify", out, "--labels", labels)
    assert code == 0 and json.loads(stdout)["class"] == "ok", err
    items = write(tmp_path / "in.jsonl", '{"prompt": [{"role": "user", "content": "hi"}], "completion": "x", '
                                         '"category": "C-R"}\n')
    code, _, err = rbrc("grade", out, "--data", items, "--grader", tiny_model_dir, "-o", tmp_path / "g.jsonl",
                        "--no-cache", "--device", "cpu")
    assert code == 0, err
    assert json.loads((tmp_path / "g.jsonl").read_text())["schema_hash"] == new
    code, _, err = rbrc("explain", out)
    assert code == 0, err
    gold = write(tmp_path / "gold.jsonl", "".join(
        json.dumps({"prompt": [{"role": "user", "content": f"q{i}"}], "completion": "x", "category": "C-R",
                    "propositions": {"a": i % 2 == 0, "b": i % 3 == 0}}) + "\n" for i in range(6)))
    probs = write(tmp_path / "probs.jsonl", "".join(
        json.dumps({"propositions": {"a": 0.8 if i % 2 == 0 else 0.3, "b": 0.6}}) + "\n" for i in range(6)))
    code, _, err = rbrc("eval", out, "--report", tmp_path / "report", "--gold", gold, "--probs", probs)
    assert code == 0, err  # the grader against gold labels uses no weights
    # ... while the reward refuses them, naming both hashes
    with pytest.raises(PolicyError, match=f"{old}.*{new}.*refit"):
        load_policy(out)

    # and fit replaces them, saying which (one line, with the schema hashes)
    code, _, err = rbrc("fit", out, "--data", data, "--decay", "0.01")
    assert code == 0, err
    assert _only(err, f"{out / 'weights.json'}:") == [
        f"{out / 'weights.json'}: replaced the stale weights of `r`: fitted for schema {old}, but the policy's "
        f"schema is now {new} (its features changed)"]
    assert load_policy(out).weights["r"].schema_hash == new


def test_recompiling_an_edit_back_makes_the_kept_weights_valid_again(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "compiled"
    assert rbrc("compile", src, "-o", out)[0] == 0
    policy = load_policy(out)
    write_weights(out, policy, [fitted(policy, "r")])
    before = (out / "weights.json").read_bytes()
    write(src, MINIMAL.replace('"Is b?"', '"Is it b?"'))
    code, _, err = rbrc("compile", src, "-o", out)
    assert code == 0 and "rbrc compile: warning:" in err and "weights.json: kept" in err
    write(src, MINIMAL)
    code, _, err = rbrc("compile", src, "-o", out)
    assert code == 0 and "warning" not in err
    assert (out / "weights.json").read_bytes() == before
    assert load_policy(out).weights["r"] == fitted(policy, "r")


def test_compile_warns_once_for_a_stale_calibration_and_fit_says_to_recalibrate(tmp_path, rbrc):
    from rbrlang.policy.calibration import Calibration, PlattMap, template_hash, write_calibration

    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "compiled"
    assert rbrc("compile", src, "-o", out)[0] == 0
    policy = load_policy(out)
    old = template_hash(policy, "a")
    write_calibration(out, Calibration("p", {n: PlattMap(n, template_hash(policy, n), 1.5, 0.1) for n in "ab"}))
    write(src, MINIMAL.replace('"Is a?"', '"Is it a?"'))
    code, _, err = rbrc("compile", src, "-o", out)
    assert code == 0, err
    new = template_hash(load_policy(out, calibration="ignore"), "a")
    # the weights are not stale: this test has none; the calibration of `a` is, that of `b` is not
    assert _only(err, "rbrc compile: warning:") == [
        f"rbrc compile: warning: {out / 'calibration.json'}: kept, but the policy cannot use it: `a` was calibrated "
        f"for template sha256 {old}, but the compiled template has sha256 {new}: the prompt changed; "
        "`rbrc eval --gold FILE --calibrate` refits it"]
    code, _, err = rbrc("fit", out, "--data", _comparisons(tmp_path / "c.jsonl"))
    assert code == 1 and "calibration.json: `a` was calibrated" in err and "--calibrate" in err
    assert not (out / "weights.json").exists()


def test_fit_replaces_another_policys_weights_and_says_so(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "compiled"
    assert rbrc("compile", src, "-o", out)[0] == 0
    (out / "weights.json").write_text('{"format": 1, "policy": "other", "response_types": {}}')
    code, _, err = rbrc("fit", out, "--data", _comparisons(tmp_path / "c.jsonl"), "--decay", "0.01")
    assert code == 0, err
    assert f"{out / 'weights.json'}: replaced the old file: fitted for policy `other`, not `p`" in err.splitlines()
    assert set(load_policy(out).weights) == {"r"}


def test_fit_drops_stale_weights_it_did_not_refit_and_says_so(safety_dir, tmp_path, rbrc):
    from .support.comparisons import make_comparisons, write_jsonl

    policy = load_policy(safety_dir)
    path = write_weights(safety_dir, policy, [fitted(policy, "comply"), fitted(policy, "hard_refuse")])
    doc = json.loads(path.read_text())
    doc["response_types"]["hard_refuse"]["schema_hash"] = "f" * 64
    path.write_text(json.dumps(doc))
    data = write_jsonl(tmp_path / "c.jsonl", make_comparisons(policy, seed=3, response_types=["comply"],
                                                              max_prompts=12))
    code, _, err = rbrc("fit", safety_dir, "--data", data, "--decay", "0.01")
    assert code == 0, err
    (line,) = _only(err, f"{path}:")
    assert line.startswith(f"{path}: dropped the stale weights of `hard_refuse` (fitted for schema {'f' * 64}, "
                           f"but the policy's schema is now {policy.response_type('hard_refuse').schema_hash}")
    assert "expected class score" in line
    assert set(load_policy(safety_dir).weights) == {"comply"}


def test_fit_refuses_a_weights_file_that_is_not_json_before_fitting(tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    out = tmp_path / "compiled"
    assert rbrc("compile", src, "-o", out)[0] == 0
    (out / "weights.json").write_text("my notes, not weights")
    code, stdout, err = rbrc("fit", out, "--data", _comparisons(tmp_path / "c.jsonl"))
    assert code == 1 and stdout == "" and "Traceback" not in err  # no table: nothing was fitted
    assert "weights.json: not valid JSON" in err and "move it away" in err
    assert (out / "weights.json").read_text() == "my notes, not weights"
