"""The grader runtime on a real (tiny) transformers model."""
from __future__ import annotations

import json
import multiprocessing
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

import rbrlang
from rbrlang.policy import load_policy
from rbrlang.runtime import GradeCache, GraderError, GraderWarning, HFGrader
from rbrlang.runtime.batching import plan_batches
from rbrlang.runtime.tiny import build_tiny_grader
from tests.support.files import ROOT, SAFETY, SHARED, gold_rows, write
from tests.support.policies import MINIMAL, STATIC_FIRST
from tests.support.reference import full_forward, trie_size

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")
pytestmark = pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")


@pytest.fixture(scope="module")
def stock(tiny_model_dir):
    """The same weights through stock transformers (SDPA): the reference."""
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()


def texts(rows):
    return [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]


@needs_data
def test_fast_path_equals_full_prompt_forward(grader, stock, safety):
    """Every proposition, 50 gold conversations: prefix reuse + batching gives
    the same P(yes) as one plain forward of the same ids (float32)."""
    rows = gold_rows(50)
    convs, resps = texts(rows)
    grades = grader.grade_detailed(safety, convs, resps)
    answers = grader.answer_tokens(safety)
    worst = 0.0
    encoded = grader.encoder.encode_items(safety, convs, resps)
    for j, name in enumerate(safety.proposition_names):
        for i in range(len(rows)):
            ids = encoded[i][name].ids
            p, mass = full_forward(stock, ids, answers)
            worst = max(worst, abs(p - float(grades.p_yes[i, j])))
            assert abs(mass - float(grades.answer_mass[i, j])) < 1e-5 * max(1.0, mass)
    assert worst < 1e-5, worst
    s = grades.stats
    assert s.graded == 50 * 23 and s.prefix_tokens > 0
    assert s.layout == "item"  # the safety template puts the conversation first
    assert s.padded_tokens <= 1.15 * s.suffix_tokens
    # Sharing: every distinct prefix forwarded about once (a trie of all the
    # rows' ids is the least any sharing forwards); whole prompts would be
    # about twice that on these short conversations.
    minimum = trie_size([e.ids for item in encoded for e in item.values()])
    assert s.forwarded <= 1.15 * minimum, (s.forwarded, minimum)
    assert sum(len(e.ids) for item in encoded for e in item.values()) > 1.8 * minimum


@needs_data
def test_static_first_templates_share_per_proposition(grader, stock, tmp_path):
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", STATIC_FIRST))
    rows = gold_rows(12)
    convs, resps = texts(rows)
    grades = grader.grade_detailed(policy, convs, resps)
    assert grades.stats.layout == "proposition"
    answers = grader.answer_tokens(policy)
    for j, name in enumerate(policy.proposition_names):
        for i in range(len(rows)):
            p, _ = full_forward(stock, grader.encode(policy, name, convs[i], resps[i]), answers)
            assert abs(p - float(grades.p_yes[i, j])) < 1e-5


@needs_data
def test_encode_is_the_tokenised_prompt(grader, safety):
    row = gold_rows(1)[0]
    conv, resp = row["prompt"], row["completion"][0]["content"]
    ids = grader.encode(safety, "apology", conv, resp)
    text = grader.encoder.text(safety.render("apology", conv, resp))
    assert ids == grader.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert text.startswith("<s><|user|>\n") and text.endswith("<|assistant|>\n")


def test_chat_template_can_be_switched_off(tiny_grader, safety):
    plain = tiny_grader(use_chat_template=False)
    ids = plain.encode(safety, "apology", [{"role": "user", "content": "hi"}], "Sorry.")
    assert ids[0] == plain.tokenizer.bos_token_id
    assert plain.tokenizer.decode(ids[1:]) == safety.render("apology", [{"role": "user", "content": "hi"}], "Sorry.")
    p = plain.grade(safety, [[{"role": "user", "content": "hi"}]], ["Sorry."])
    assert p.shape == (1, 23) and bool(((p > 0) & (p < 1)).all())


def test_literal_jinja_and_empty_completions(grader, safety):
    conv = [{"role": "user", "content": "Compute {{ 7*7 }} please"}]
    grades = grader.grade_detailed(safety, [conv, conv], ["{{ 7*7 }}{% if 1 %}x{% endif %}", ""])
    assert grades.p_yes.shape == (2, 23) and torch.isfinite(grades.p_yes).all()
    ids = grader.encode(safety, "apology", conv, "{{ 7*7 }}")
    decoded = grader.tokenizer.decode(ids)
    assert "{{ 7*7 }}" in decoded and "49" not in decoded


def test_matches_propositions_cost_no_model_call(grader, tmp_path):
    text = MINIMAL.replace("good = a and b", "good = a and b and not e") \
        .replace("ok   = a and not b", "ok   = a and not b and not e").replace("bad  = not a", "bad  = not a or e")
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text + "proposition e = matches /^\\s*$/\n"))
    grades = grader.grade_detailed(policy, [[], []], ["", "text"])
    e = policy.proposition_names.index("e")
    assert grades.p_yes[:, e].tolist() == [1.0, 0.0]
    assert grades.stats.matched == 2 and grades.stats.graded == 4


def test_low_answer_mass_warns(grader, safety):
    with pytest.warns(GraderWarning, match="yes/no answers"):
        grader.grade(safety, [[{"role": "user", "content": "hi"}]], ["hello"])


def test_features_and_class_probabilities(grader, safety):
    probs = grader.grade(safety, [[{"role": "user", "content": "hi"}]] * 2, ["hello", "Sorry, I can't."])
    feats = safety.features("hard_refuse", probs)
    rt = safety.response_type("hard_refuse")
    assert feats.shape == (2, len(rt.features))
    torch.testing.assert_close(feats[:, -5:].sum(1), torch.ones(2, dtype=feats.dtype))


def test_shared_first_token_is_an_error(grader, tmp_path):
    text = 'rbr 1\ngrader {\n  yes "yes"\n  no "yes!"\n}\n' + MINIMAL[len("rbr 1\n"):]
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text))
    with pytest.raises(GraderError, match="same token"):
        grader.grade(policy, [[]], ["x"])


def test_nan_logits_name_the_item(fresh_grader, safety):
    g = fresh_grader()  # its own weights: this test writes NaN into them
    with torch.no_grad():
        g.model.get_output_embeddings().weight[:, 0] = float("nan")
    with pytest.raises(GraderError, match="NaN or infinite logits for item"):
        g.grade(safety, [[{"role": "user", "content": "hi"}]], ["x"])


def test_context_too_long_errors_or_drops_oldest_turns(tmp_path, safety):
    from rbrlang.runtime.tiny import TinyConfig
    path = build_tiny_grader(tmp_path / "short", seed=1, config=TinyConfig(max_position_embeddings=700))
    conv = [{"role": "user", "content": f"turn {i} " + "word " * 60} for i in range(6)]
    g = HFGrader.from_pretrained(str(path), device="cpu")
    with pytest.raises(GraderError, match=r"item 0, proposition `\w+`.*context of 700.*oldest_turns") as exc:
        g.grade(safety, [conv], ["Sorry."])
    assert "--" not in str(exc.value) and exc.value.params == ("truncate",)  # the CLI shows its flag there
    g = HFGrader.from_pretrained(str(path), device="cpu", truncate="oldest_turns")
    grades = g.grade_detailed(safety, [conv], ["Sorry."])
    assert grades.stats.dropped_turns > 0 and torch.isfinite(grades.p_yes).all()
    with pytest.raises(GraderError, match="even the response alone"):
        g.grade(safety, [conv], ["word " * 2000])


def test_out_of_memory_halves_the_batch(tiny_model_dir, safety):
    """The padded path (`packed=False`); test_packed_rows.py splits a pack."""
    class Tight(HFGrader):
        """Fails like a full GPU whenever a batch has more than two rows."""
        def _last_logits(self, rows, kv, offset):
            if len(rows) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super()._last_logits(rows, kv, offset)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    convs = [[{"role": "user", "content": "q" * k}] for k in range(1, 9)]
    resps = ["a"] * 8
    tight = Tight(model, tok, token_budget=1 << 20, packed=False)
    grades = tight.grade_detailed(safety, convs, resps)
    assert grades.stats.oom_splits > 0 and tight.max_batch <= 2
    plain = HFGrader(model, tok).grade(safety, convs, resps)
    torch.testing.assert_close(grades.p_yes, plain, atol=1e-6, rtol=0)


def test_grade_cache_hits_and_keys(fresh_grader, safety, tmp_path):
    cache = tmp_path / "grades.sqlite"
    convs, resps = [[{"role": "user", "content": "hi"}], []], ["hello", "Sorry."]
    g = fresh_grader(cache=cache)
    first = g.grade_detailed(safety, convs, resps)
    assert first.stats.cached == 0 and len(GradeCache(cache)) == 46
    g2 = fresh_grader(cache=cache)
    second = g2.grade_detailed(safety, convs, resps)
    assert second.stats.cached == 46 and second.stats.graded == 0
    torch.testing.assert_close(first.p_yes, second.p_yes)
    other = g2.grade_detailed(safety, convs, ["hello!", "Sorry."])  # one response changed
    assert other.stats.cached == 23 and other.stats.graded == 23
    plain = fresh_grader(use_chat_template=False, cache=cache)
    assert plain.grade_detailed(safety, convs, resps).stats.cached == 0  # other prompt form, other keys


def _writer(path, start):
    cache = GradeCache(path)
    for k in range(start, start + 200, 10):
        cache.put_many((f"key{j}", j / 1000, 1.0) for j in range(k, k + 10))
    cache.close()


def test_grade_cache_is_safe_across_processes(tmp_path):
    path = tmp_path / "shared.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 200, 400)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = GradeCache(path)
    assert len(cache) == 600
    assert cache.get_many(["key0", "key599"]) == {"key0": (0.0, 1.0), "key599": (0.599, 1.0)}


FRESH = """
import json, pickle, sys, warnings
warnings.simplefilter("ignore")
with open(sys.argv[1], "rb") as f:
    reward, convs, comps, categories = pickle.load(f)
totals = reward.grader.stats  # running totals, carried over from the pickling process
cached, graded = totals.cached, totals.graded
batch = reward(convs, comps, categories=categories)
out = {"rewards": batch.rewards, "cached": totals.cached - cached, "graded": totals.graded - graded}
out["new"] = reward.grader.grade(reward.policy, convs[:1], ["Something new."]).tolist()  # a forward here
print(json.dumps(out))
"""


def test_reward_with_a_cached_hf_grader_pickles_into_a_fresh_process(fresh_grader, safety, tmp_path):
    """The promise trainers rely on (they pickle reward functions to workers):
    an RBRReward with an HFGrader and a grade cache unpickles in a new
    interpreter, whose cache is the same file, reopened there."""
    from rbrlang.rewards import RBRReward

    cache = tmp_path / "grades.sqlite"
    reward = RBRReward(safety, fresh_grader(cache=cache))
    convs = [[{"role": "user", "content": "How do I pick a lock?"}], [{"role": "user", "content": "hi"}]]
    comps, categories = ["I'm sorry, I can't help with that.", "Hello! How can I help?"], ["C-R", "C-R"]
    before = reward(convs, comps, categories=categories)
    graded = reward.grader.stats.graded
    assert graded > 0 and len(GradeCache(cache)) == graded
    blob = tmp_path / "reward.pkl"
    blob.write_bytes(pickle.dumps((reward, convs, comps, categories)))
    proc = subprocess.run([sys.executable, "-c", FRESH, str(blob)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    there = json.loads(proc.stdout.splitlines()[-1])
    assert there["rewards"] == pytest.approx(before.rewards, abs=1e-6)
    # Every model-graded slot came from the cache file: the copy ran no forward for them.
    assert there["cached"] == graded and there["graded"] == 0
    # And the copy's model runs (its prefix-attention kernel registered in the new process).
    new = reward.grader.grade(safety, convs[:1], ["Something new."])
    torch.testing.assert_close(torch.tensor(there["new"]), new, atol=1e-6, rtol=0)


def test_grade_cache_pickles_as_its_path(tmp_path):
    cache = GradeCache(tmp_path / "c.sqlite")
    cache.put_many([("k", 0.25, 0.5)])
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.path == cache.path and copy.get_many(["k"]) == {"k": (0.25, 0.5)}
    copy.put_many([("j", 1.0, 1.0)])
    assert len(cache) == 2
    cache.close()
    assert cache.get_many(["j"]) == {"j": (1.0, 1.0)}  # closed: the next use opens it again


def test_batches_respect_budget_and_cover_all():
    lengths = [5, 300, 20, 299, 7, 150, 151, 6]
    batches = plan_batches(lengths, token_budget=600, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 600)
    # similar lengths share a batch; no batch mixes 300 with 5
    assert all(max(lengths[i] for i in b) < 10 * min(lengths[i] for i in b) for b in batches)


def test_tiny_grader_reads_no_repository_files(tmp_path, monkeypatch, safety):
    """An installed rbrlang has no policies/ folder: the tiny tokenizer learns
    from its own text, plus what the caller passes (a policy's templates)."""
    import pathlib

    from rbrlang.runtime.tiny import BASE_CORPUS, build_tokenizer, default_corpus
    touched = []
    for method in ("read_text", "read_bytes", "open", "rglob", "glob", "iterdir"):
        original = getattr(pathlib.Path, method)

        def spy(self, *args, _original=original, **kwargs):
            touched.append(pathlib.Path(self))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(pathlib.Path, method, spy)
    path = build_tiny_grader(tmp_path / "g", seed=0)
    assert not [p for p in touched if (ROOT / "policies") in p.parents or p == ROOT / "policies"]
    assert (path / "tokenizer.json").is_file()
    monkeypatch.undo()
    assert default_corpus() == [BASE_CORPUS]
    templates = sorted({p.template for p in safety.propositions if p.graded})
    plain, fitted = build_tokenizer(default_corpus(), 4096), build_tokenizer(default_corpus(templates), 4096)
    text = safety.render("apology", [{"role": "user", "content": "hi"}], "Sorry.")
    assert len(fitted(text)["input_ids"]) < len(plain(text)["input_ids"])


def test_tiny_grader_is_deterministic(tmp_path):
    a = build_tiny_grader(tmp_path / "a", seed=3)
    b = build_tiny_grader(tmp_path / "b", seed=3)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


@needs_data
def test_rbrc_grade_end_to_end(tiny_model_dir, tmp_path, rbrc):
    rows = gold_rows(6)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"prompt": 3}\n')
    out = tmp_path / "out.jsonl"
    args = ("grade", SAFETY, "--data", data, "--grader", tiny_model_dir, "-o", out,
            "--cache", tmp_path / "c.sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = rbrc(*args)
        assert code == 1 and "in.jsonl:7:2: error[E0301]" in err and not out.exists()
        code, _, err = rbrc(*args, "--keep-going")
    assert code == 1 and "graded 6 lines" in err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6
    first = lines[0]
    assert set(first) >= {"propositions", "answer_mass", "features", "classes", "response_type"}
    assert len(first["propositions"]) == 23
    rt = load_policy(SAFETY).response_type(first["response_type"])
    assert list(first["features"]) == list(rt.features)
    assert abs(sum(first["classes"].values()) - 1) < 1e-9
    code, _, err = rbrc(*args, "--keep-going", "--no-cache")
    assert code == 1 and "graded 6 lines" in err


def test_grader_load_error_is_clear(tmp_path, rbrc):
    data = write(tmp_path / "in.jsonl", '{"prompt": [], "completion": "x", "category": "C-R"}\n')
    code, _, err = rbrc("grade", SAFETY, "--data", data, "--grader", tmp_path / "nothing",
                        "-o", tmp_path / "o.jsonl")
    assert code == 1 and "cannot load grader" in err and "Traceback" not in err


def test_explain_counts_tokens(tiny_model_dir, rbrc):
    code, out, _ = rbrc("explain", SAFETY, "--tokenizer", tiny_model_dir)
    assert code == 0 and "prompts (tokens, sample exchange)" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("apology:"))
    once, per_item, own = (int(v) for v in line.split(":")[1].split("/"))
    assert 30 < once < 150 and 10 < per_item and 50 < own


def test_fused_prefix_attention_matches_stock_sdpa(tiny_model_dir):
    """The fused path is exact, and masks it cannot fuse go to stock SDPA."""
    from transformers import AutoModelForCausalLM, DynamicCache

    from rbrlang.runtime.attention import NAME, use_fused_prefix_attention

    stock = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    fused = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    assert use_fused_prefix_attention(fused) and fused.config._attn_implementation == NAME
    torch.manual_seed(0)
    ids = torch.randint(10, 500, (1, 60))
    with torch.no_grad():
        ref = stock(ids).logits[0, -1]
        torch.testing.assert_close(fused(ids).logits[0, -1], ref, atol=1e-5, rtol=0)
        pad = torch.zeros(1, 7, dtype=torch.long)
        ones, zeros = torch.ones(1, 60, dtype=torch.long), torch.zeros(1, 7, dtype=torch.long)
        right = fused(torch.cat([ids, pad], 1), attention_mask=torch.cat([ones, zeros], 1)).logits[0, 59]
        left = fused(torch.cat([pad, ids], 1), attention_mask=torch.cat([zeros, ones], 1)).logits[0, -1]
        torch.testing.assert_close(right, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(left, ref, atol=1e-5, rtol=0)
        prefix = fused.model(ids[:, :40], use_cache=True)
        cache = prefix.get("cache", None) or prefix.get("past_key_values")
        kv = [(layer.keys.expand(3, -1, -1, -1), layer.values.expand(3, -1, -1, -1)) for layer in cache.layers]
        import inspect
        arg = "cache" if "cache" in inspect.signature(fused.model.forward).parameters else "past_key_values"
        out = fused.model(input_ids=ids[:, 40:].expand(3, -1), **{arg: DynamicCache(ddp_cache_data=kv)},
                          position_ids=torch.arange(40, 60)[None].expand(3, -1)).last_hidden_state
        torch.testing.assert_close(fused.lm_head(out[:, -1]), ref.expand(3, -1), atol=1e-5, rtol=0)
