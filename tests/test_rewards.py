"""Rewards: `policy.reward` (fitted and unfitted) and the trainer-facing `RBRReward`,
with a real tiny grader, the compiled safety policy and gold conversations."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from rbrlang.errors import ConversationError, PolicyError
from rbrlang.policy import load_policy
from rbrlang.policy.scoring import default_scores
from rbrlang.rewards import RBRReward, RewardBatch

from tests.support.files import SAFETY, SHARED, gold_rows, write
from tests.support.policies import MINIMAL, copy_safety

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")
pytestmark = pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")


def one_hot_classes(policy, name):
    """One feature row per class: that class surely, propositions at 0.5."""
    rt = policy.response_type(name)
    f, c = len(rt.features), len(rt.classes)
    x = torch.full((c, f), 0.5, dtype=torch.float64)
    x[:, f - c:] = torch.eye(c, dtype=torch.float64)
    return x


def items(rows):
    return [r["prompt"] for r in rows], [r["completion"] for r in rows]


def independent_reward(policy, grader, convs, texts, rts, rm=None):
    """The reward from first principles: grade each routed item alone, then
    expected class score (or w·x + b) from the policy's features."""
    out = []
    for i, (conv, text, rt) in enumerate(zip(convs, texts, rts)):
        if rt is None:
            out.append(None if rm is None else rm[i])
            continue
        p = grader.grade(policy, [conv], [text]).double()
        value = float(policy.reward(rt, policy.features(rt, p))[0])
        out.append(value if rm is None else value + rm[i])
    return out


# --- policy.reward ---------------------------------------------------------------------

def test_unfitted_rewards_are_ordered_by_class(safety):
    for name, rt in safety.response_types.items():
        r = safety.reward(name, one_hot_classes(safety, name))
        assert r.shape == (len(rt.classes),)
        assert all(a > b for a, b in zip(r.tolist(), r.tolist()[1:])), (name, r)
        torch.testing.assert_close(r, torch.tensor(default_scores(len(rt.classes)), dtype=torch.float64))


def test_unfitted_reward_is_the_expected_class_score(safety):
    x = one_hot_classes(safety, "comply")
    mix = 0.25 * x[0] + 0.75 * x[3]  # 1/4 ideal (1.0), 3/4 illogical (0.25)
    assert float(safety.reward("comply", mix[None])[0]) == pytest.approx(0.25 * 1.0 + 0.75 * 0.25)
    r = safety.reward("Comply", x, rm_score=torch.arange(5.0))
    torch.testing.assert_close(r, torch.tensor([1.0, 1.75, 2.5, 3.25, 4.0], dtype=torch.float64))


def test_default_scores():
    assert default_scores(1) == (1.0,)
    assert default_scores(3) == (1.0, 0.5, 0.0)


def test_class_scores_from_policy_json(tmp_path):
    def scores(doc):
        for r in doc["response_types"]:
            for c, s in zip(r["classes"], [3.0, 2.0, 0.5, -1.0, -4.0]):
                c["score"] = s
    policy = load_policy(copy_safety(tmp_path / "safety", scores))
    r = policy.reward("hard_refuse", one_hot_classes(policy, "hard_refuse"))
    assert r.tolist() == [3.0, 2.0, 0.5, -1.0, -4.0]


def test_author_class_scores_from_the_rbr_source(tmp_path):
    """`scores` in a response block reach policy.reward through policy.json."""
    import rbrlang

    text = MINIMAL.replace("  bad  = not a\n", "  bad  = not a\n  scores good 2, ok 1.5, bad -1\n")
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text))
    assert policy.reward("r", one_hot_classes(policy, "r")).tolist() == [2.0, 1.5, -1.0]
    plain = rbrlang.compile_file(write(tmp_path / "q.rbr", MINIMAL))
    assert plain.reward("r", one_hot_classes(plain, "r")).tolist() == [1.0, 0.5, 0.0]


def test_bad_class_scores_are_a_policy_error(tmp_path):
    def words(doc):
        doc["response_types"][0]["classes"][0]["score"] = "high"
    try:  # a loader that checks class scores refuses the folder itself: also fine
        policy = load_policy(copy_safety(tmp_path / "safety", words))
    except PolicyError as exc:
        assert "score" in str(exc)
        return
    with pytest.raises(PolicyError, match="class scores"):
        policy.reward("hard_refuse", one_hot_classes(policy, "hard_refuse"))


def test_reward_input_errors(safety):
    x = one_hot_classes(safety, "comply")
    with pytest.raises(PolicyError, match=r"has 11 features; expected features of shape \[N, 11\].*got \[5, 10\]"):
        safety.reward("comply", x[:, 1:])
    with pytest.raises(PolicyError, match=r"shape \[N, 11\]"):
        safety.reward("comply", x[0])
    bad = x.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(PolicyError, match="not finite in row 2"):
        safety.reward("comply", bad)
    with pytest.raises(PolicyError, match=r"rm_score must have shape \[5\]"):
        safety.reward("comply", x, rm_score=[0.0] * 4)
    with pytest.raises(PolicyError, match="rm_score is not finite at item 1"):
        safety.reward("comply", x, rm_score=[0.0, float("inf"), 0, 0, 0])
    with pytest.raises(PolicyError, match="unknown response type `complyy`"):
        safety.reward("complyy", x)


def write_weights(folder, policy, name, weights, bias):
    """weights.json per CONTRACTS.md (what `rbrc fit` writes)."""
    rt = policy.response_type(name)
    doc = {"format": 1, "policy": policy.name, "response_types": {name: {
        "schema_hash": rt.schema_hash, "features": list(rt.features), "weights": weights, "bias": bias,
        "margin": 1.0, "decay": 0.01, "data_sha256": "0" * 64,
        "metrics": {"pairs": 10, "train_pairs": 8, "val_pairs": 2, "train_loss": 0.1, "val_loss": 0.2,
                    "train_error": 0.0, "val_error": 0.5, "rm_val_error": None}}}}
    (folder / "weights.json").write_text(json.dumps(doc, indent=2))


def test_fitted_weights_are_used(tmp_path, safety):
    folder = copy_safety(tmp_path / "safety")
    f = len(safety.response_type("comply").features)
    w = [0.1 * (k + 1) * (-1) ** k for k in range(f)]
    write_weights(folder, safety, "comply", w, -0.25)
    fitted = load_policy(folder)
    assert set(fitted.weights) == {"comply"}
    x = torch.rand(7, f, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = x @ torch.tensor(w, dtype=torch.float64) - 0.25
    torch.testing.assert_close(fitted.reward("comply", x), expected)
    torch.testing.assert_close(fitted.reward("comply", x, rm_score=torch.ones(7)), expected + 1)
    # other response types have no fit: still the expected class score
    torch.testing.assert_close(fitted.reward("hard_refuse", one_hot_classes(fitted, "hard_refuse")),
                               safety.reward("hard_refuse", one_hot_classes(safety, "hard_refuse")))


# --- RBRReward ---------------------------------------------------------------------------

@needs_data
def test_rewards_equal_policy_reward_from_the_grader(safety, grader):
    rows = gold_rows(6)
    convs, comps = items(rows)
    cats = [r["category"] for r in rows]
    types = [r["response_type"] if k % 2 else None for k, r in enumerate(rows)]  # mixed: type wins, else category
    batch = RBRReward(safety, grader)(convs, comps, categories=cats, response_types=types)
    assert isinstance(batch, RewardBatch) and len(batch) == 6
    expected_rts = [safety.response_type(t).name if t else safety.route(c) for t, c in zip(types, cats)]
    assert batch.response_types == expected_rts
    texts = [c[0]["content"] for c in comps]
    want = independent_reward(safety, grader, convs, texts, expected_rts)
    assert batch.rewards == pytest.approx(want, abs=1e-5)
    assert batch.rbr == batch.rewards and batch.rm == [None] * 6
    for rt, cp in zip(batch.response_types, batch.class_probabilities):
        assert list(cp) == list(safety.response_type(rt).classes)
        assert sum(cp.values()) == pytest.approx(1.0)
    means = batch.mean_class_probabilities()
    assert set(means) == set(expected_rts)
    assert all(sum(m.values()) == pytest.approx(1.0) for m in means.values())


def no_default_route(doc):
    doc["default_route"] = None


def rm_length(conversations, completions):
    """A picklable stand-in reward model: longer completions score higher."""
    return [len(c) / 100 for c in completions]


@needs_data
def test_unrouted_items_get_none_and_the_rm_decides_there(tmp_path, grader):
    policy = load_policy(copy_safety(tmp_path / "safety", no_default_route))
    rows = gold_rows(4)
    convs, comps = items(rows)
    cats = ["C-R", "no-such-category", None, "SH-C"]
    batch = RBRReward(policy, grader)(convs, comps, categories=cats)
    assert batch.response_types == ["hard_refuse", None, None, "comply"]
    assert batch.rewards[1] is None and batch.rewards[2] is None
    assert batch.class_probabilities[1] is None and batch.rbr[2] is None
    assert all(isinstance(batch.rewards[i], float) for i in (0, 3))

    with_rm = RBRReward(policy, grader, rm=rm_length)(convs, comps, categories=cats)
    texts = [c[0]["content"] for c in comps]
    rm = rm_length(convs, texts)
    assert with_rm.rm == pytest.approx(rm)
    assert with_rm.rewards[1] == pytest.approx(rm[1]) and with_rm.rewards[2] == pytest.approx(rm[2])
    assert with_rm.rewards[0] == pytest.approx(batch.rbr[0] + rm[0], abs=1e-9)
    assert with_rm.rewards == pytest.approx(independent_reward(policy, grader, convs, texts,
                                                               batch.response_types, rm), abs=1e-5)


@needs_data
def test_rm_scores_in_the_call_and_string_completions(safety, grader):
    rows = gold_rows(3)
    convs, comps = items(rows)
    texts = [c[0]["content"] for c in comps]
    reward = RBRReward(safety, grader, rm=rm_length)
    a = reward(convs, texts, response_types="comply", rm_scores=[1.0, -2.0, 0.5])  # rm not called
    b = reward(convs, comps, response_types=["comply"] * 3, rm_scores=torch.tensor([1.0, -2.0, 0.5]))
    assert a == b
    assert a.rm == [1.0, -2.0, 0.5]
    assert [r - m for r, m in zip(a.rewards, a.rm)] == pytest.approx(a.rbr, abs=1e-12)


@needs_data
def test_weights_are_used_by_rbrreward(tmp_path, safety, grader):
    folder = copy_safety(tmp_path / "safety")
    f = len(safety.response_type("comply").features)
    write_weights(folder, safety, "comply", [(-1.0) ** k for k in range(f)], 2.0)
    fitted = load_policy(folder)
    rows = gold_rows(3)
    convs, comps = items(rows)
    batch = RBRReward(fitted, grader)(convs, comps, response_types="comply")
    p = grader.grade(safety, convs, [c[0]["content"] for c in comps]).double()
    x = safety.features("comply", p)
    want = x @ torch.tensor([(-1.0) ** k for k in range(f)], dtype=torch.float64) + 2.0
    assert batch.rbr == pytest.approx(want.tolist(), abs=1e-5)
    unfitted = RBRReward(safety, grader)(convs, comps, response_types="comply")
    assert batch.rbr != pytest.approx(unfitted.rbr, abs=1e-3)


def test_p_yes_skips_the_grader(safety):
    """Precomputed probabilities (e.g. gold labels) need no grader."""
    rows = gold_rows(5)
    convs, comps = items(rows)
    labels = torch.tensor([[float(r["propositions"].get(p, False)) for p in safety.proposition_names]
                           for r in rows])
    batch = RBRReward(safety)(convs, comps, categories=[r["category"] for r in rows], p_yes=labels)
    for k, r in enumerate(rows):
        rt = batch.response_types[k]
        cls = safety.classify(rt, {p: bool(r["propositions"].get(p, False)) for p in safety.proposition_names})
        assert batch.class_probabilities[k][cls] == 1.0
        scores = dict(zip(safety.response_type(rt).classes, default_scores(5)))
        assert batch.rewards[k] == scores[cls]


def test_bad_inputs_are_clear_errors(safety):
    conv = [[{"role": "user", "content": "hi"}]] * 2
    reward = RBRReward(safety)
    with pytest.raises(PolicyError, match="2 conversations but 3 completions"):
        reward(conv, ["a", "b", "c"], categories=["C-R", "C-R"])
    with pytest.raises(PolicyError, match="categories has 1 entries for 2 items"):
        reward(conv, ["a", "b"], categories=["C-R"])
    with pytest.raises(PolicyError, match="item 1: unknown response type `refuse_hard`"):
        reward(conv, ["a", "b"], response_types=["comply", "refuse_hard"])
    with pytest.raises(PolicyError, match="give each item's `categories` or `response_types`"):
        reward(conv, ["a", "b"])
    with pytest.raises(ConversationError, match="conversation 1: message 0 must be an object"):
        reward([conv[0], [{"role": "user"}]], ["a", "b"], categories="C-R")
    with pytest.raises(ConversationError, match="conversations must be a list"):
        reward("hello", ["a"], categories="C-R")
    with pytest.raises(ConversationError, match="completion 0: the completion's messages must all be"):
        reward(conv, [[{"role": "user", "content": "x"}], "b"], categories="C-R")
    with pytest.raises(PolicyError, match="no grader"):
        reward(conv, ["a", "b"], categories="C-R")
    with pytest.raises(PolicyError, match="rm_scores: score not finite at item 0"):
        reward(conv, ["a", "b"], categories="C-R", rm_scores=[float("nan"), 0.0])
    with pytest.raises(PolicyError, match="rm_scores gave 1 scores for 2 items"):
        reward(conv, ["a", "b"], categories="C-R", rm_scores=[0.0])
    with pytest.raises(PolicyError, match=r"p_yes must have shape \[2, 23\]"):
        reward(conv, ["a", "b"], categories="C-R", p_yes=torch.zeros(2, 22))
    with pytest.raises(PolicyError, match="finite probabilities"):
        reward(conv, ["a", "b"], categories="C-R", p_yes=torch.full((2, 23), 1.5))
    with pytest.raises(PolicyError, match="must have a `grade"):
        RBRReward(safety, grader="a model")
    # nothing routed: no grader needed, all None
    policy = reward.policy
    assert policy.route("anything") == "comply"
    assert reward(conv, ["a", "b"], response_types=[None, None]).rewards == [None, None]


@needs_data
def test_pickles_with_a_real_grader_and_from_compiled(tiny_model_dir, safety):
    reward = RBRReward.from_compiled(SAFETY, grader=tiny_model_dir, rm=rm_length, device="cpu")
    assert "safety" in repr(reward)
    rows = gold_rows(2)
    convs, comps = items(rows)
    before = reward(convs, comps, categories=[r["category"] for r in rows])
    again = pickle.loads(pickle.dumps(reward))
    after = again(convs, comps, categories=[r["category"] for r in rows])
    assert after.rewards == pytest.approx(before.rewards, abs=1e-6)
    assert after.response_types == before.response_types
    with pytest.raises(PolicyError, match="grader options"):
        RBRReward.from_compiled(SAFETY, grader=None, device="cpu")


@needs_data
def test_calibration_is_applied_before_features(tmp_path, safety, grader):
    """calibration.json present: rewards use the calibrated P(yes), computed once."""
    import hashlib

    folder = copy_safety(tmp_path / "safety")
    props = {name: {"template_sha256": hashlib.sha256(safety.proposition(name).template.encode()).hexdigest(),
                    "coef": 3.0, "intercept": 1.5, "metrics": {}}
             for name in ("meta_commentary", "requests_information", "partially_complies", "disallowed_content")}
    (folder / "calibration.json").write_text(json.dumps(
        {"format": 1, "policy": safety.name, "method": "platt", "propositions": props}))
    calibrated = load_policy(folder)
    rows = gold_rows(3)
    convs, comps = items(rows)
    texts = [c[0]["content"] for c in comps]
    batch = RBRReward(calibrated, grader)(convs, comps, response_types="comply")
    p = calibrated.calibrate(grader.grade(safety, convs, texts).double())
    want = safety.reward("comply", safety.features("comply", p))
    assert batch.rbr == pytest.approx(want.tolist(), abs=1e-5)
    raw = RBRReward(safety, grader)(convs, comps, response_types="comply")
    assert batch.rbr != pytest.approx(raw.rbr, abs=1e-4)


# --- one routing rule, one unrouted rule, for every door ------------------------------------------

def test_one_routing_rule_for_data_lines_the_reward_and_engine_samples(safety):
    from rbrlang.data.records import LineError, response_type_of
    from rbrlang.integrations.samples import Sample, SampleError, check_route

    cases = [({"response_type": "Hard Refuse", "category": "SH-C"}, "hard_refuse"),  # the response type wins
             ({"category": "SH-C"}, safety.route("SH-C")), ({"category": "no-such"}, safety.route("no-such"))]
    for keys, want in cases:
        assert safety.route_item(**keys) == want
        assert response_type_of(safety, keys) == want
        assert RBRReward(safety).route(1, keys.get("category"), keys.get("response_type")) == [want]
        check_route(safety, Sample((), "", keys.get("category"), keys.get("response_type")), 0)
    assert safety.route_item() is None and RBRReward(safety).route(1, [None], [None]) == [None]
    # An unknown response type: one message, located by each door.
    with pytest.raises(PolicyError, match=r"unknown response type `refuse_hard` \(policy `safety` has hard_refuse"):
        safety.route_item(response_type="refuse_hard")
    with pytest.raises(LineError, match="unknown response type `refuse_hard`") as line:
        response_type_of(safety, {"response_type": "refuse_hard"})
    assert (line.value.code, line.value.key) == ("E0302", "response_type")
    with pytest.raises(LineError, match="`category` must be a string, not a number") as line:
        response_type_of(safety, {"category": 3})
    assert (line.value.code, line.value.key) == ("E0301", "category")
    with pytest.raises(SampleError, match="sample 4: unknown response type `refuse_hard`"):
        check_route(safety, Sample((), "", None, "refuse_hard"), 4)
    with pytest.raises(PolicyError, match="`response_type` must be a string, not a number"):
        safety.route_item(response_type=3)


INTEGRATIONS = ("trl_grpo", "trl_ppo", "openrlhf_reward_func", "openrlhf_server", "verl")


def through(door, reward, tokenizer, conversations, texts, categories, unrouted=None):
    """Each sample's reward as the integration `door` hands it to its trainer, called as that trainer
    calls it (tests/test_integrations_trl.py, test_trl_ppo.py, test_verl.py, test_serve.py);
    `unrouted`: the integration's unrouted reward setting, where it has one."""
    setting = {} if unrouted is None else {"unrouted_reward": unrouted}
    if door == "trl_grpo":
        from rbrlang.integrations.trl import RBRRewardFunction

        return RBRRewardFunction(reward)(prompts=conversations, completions=texts, category=categories)
    if door == "trl_ppo":
        pytest.importorskip("trl.experimental.ppo", reason="trl 1.12 is not installed")
        from rbrlang.integrations.trl_ppo import PromptTable, RBRRewardModel

        table = PromptTable(tokenizer, conversations, categories=categories)
        model = RBRRewardModel(reward, tokenizer, table, **setting)
        pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
        width = max(map(len, table.input_ids))
        rows = [[pad] * (width - len(p)) + list(p) + tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]
                for p, t in zip(table.input_ids, texts)]
        long = max(map(len, rows))
        ids = torch.tensor([r + [pad] * (long - len(r)) for r in rows])
        return model(ids, ids != pad)[:, -1, 0].tolist()
    from tests.support.serving import PolicyModelText, openrlhf_body

    samples = [{"messages": c, "completion": t, "category": k} for c, t, k in zip(conversations, texts, categories)]
    body = openrlhf_body(PolicyModelText(tokenizer), samples)
    if door == "openrlhf_reward_func":
        from rbrlang.integrations.openrlhf import RewardFunc

        func = RewardFunc(reward, ["</s>"], **setting)
        return func(body["query"], body["prompts"], body["labels"])["rewards"].tolist()
    if door == "openrlhf_server":
        if unrouted is not None:
            return None  # `rbrc serve` has no setting of its own: always UNROUTED_REWARD
        from rbrlang.serve import create_app
        from tests.support.serving import http, running_server

        with running_server(create_app(reward, strip_suffixes=["</s>"])) as (url, _):
            return http().post(url + "/get_reward", json=body, timeout=120).json()["rewards"]
    from rbrlang.integrations import verl

    infos = [{"messages": s["messages"], "category": s["category"]} for s in samples]
    return verl.compute_score_batch([""] * len(texts), texts, [""] * len(texts), infos, reward=reward, **setting)


@pytest.mark.parametrize("with_rm", (False, True), ids=("no-rm", "rm"))
@pytest.mark.parametrize("door", INTEGRATIONS)
def test_the_unrouted_rule_holds_in_every_integration(tmp_path, grader, tiny_model_dir, door, with_rm):
    """docs/TRAINING.md "Prompts without a route": routed, RBR (+ RM); unrouted, the RM score, else
    None where the trainer takes None (TRL GRPO/RLOO) and `unrouted_reward` (0.0) where it needs a number."""
    import doctest

    from transformers import AutoTokenizer

    from rbrlang.rewards import UNROUTED_REWARD, reward as reward_module

    assert doctest.testmod(reward_module, optionflags=doctest.ELLIPSIS).failed == 0
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    policy = load_policy(copy_safety(tmp_path / "safety", no_default_route))
    conversations = [[{"role": "user", "content": "How do I pick a lock?"}],
                     [{"role": "user", "content": "What is the capital of France?"}]]
    texts = ["I am sorry, I cannot help with that.", "Paris is the capital."]
    # The texts survive every door's tokenizer round trip, so every door grades these very texts.
    assert [tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts] == texts
    categories = ["C-R", "no-such-category"]
    reward = RBRReward(policy, grader, rm=rm_length if with_rm else None)
    direct = reward(conversations, texts, categories=categories)
    assert direct.response_types == ["hard_refuse", None]

    got = through(door, reward, tokenizer, conversations, texts, categories)
    assert got[0] == pytest.approx(direct.rbr[0] + (rm_length(conversations, texts)[0] if with_rm else 0), abs=1e-5)
    if with_rm:
        assert got[1] == pytest.approx(rm_length(conversations, texts)[1], abs=1e-6)  # the RM alone decides
    elif door == "trl_grpo":
        assert got[1] is None  # TRL reads None as NaN: its other reward functions decide
    else:
        assert got[1] == UNROUTED_REWARD == 0.0
        custom = through(door, reward, tokenizer, conversations, texts, categories, unrouted=-1.5)
        if custom is not None:
            assert custom[1] == -1.5 and custom[0] == pytest.approx(got[0], abs=1e-6)
    if door in ("openrlhf_reward_func", "verl"):  # their shared batcher thread: ended with the test
        from rbrlang.integrations.loading import batcher_for

        batcher_for(reward).close()
