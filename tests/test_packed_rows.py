"""Packed rows (HFGrader's default, `packed=True`): each item's rows end to end
in one sequence after one copy of its conversation's key/values, no padding.
Against the plain whole-prompt forward of stock transformers (float32), the
earlier padded path, and the trie minimum of tokens."""
from __future__ import annotations

import pytest
import torch

import rbrlang
from rbrlang.runtime import HFGrader
from tests.support.files import SHARED, gold_rows, write
from tests.support.policies import MINIMAL, STATIC_FIRST
from tests.support.reference import full_forward, trie_size

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")
pytestmark = pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")


@pytest.fixture(scope="module")
def stock(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def items():
    rows = gold_rows(6)
    return [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]


def worst_vs_whole_prompts(grader, stock, policy, convs, resps, grades):
    answers = grader.answer_tokens(policy)
    encoded = grader.encoder.encode_items(policy, convs, resps)
    worst = 0.0
    for j, name in enumerate(policy.proposition_names):
        for i in range(len(convs)):
            p, mass = full_forward(stock, encoded[i][name].ids, answers)
            worst = max(worst, abs(p - float(grades.p_yes[i, j])))
            assert abs(mass - float(grades.answer_mass[i, j])) < 1e-5 * max(1.0, mass)
    return worst, encoded


@needs_data
def test_packed_rows_equal_whole_prompts_and_forward_near_the_minimum(fresh_grader, stock, safety, items):
    grader = fresh_grader()
    assert grader.packed
    grades = grader.grade_detailed(safety, *items)
    worst, encoded = worst_vs_whole_prompts(grader, stock, safety, *items, grades)
    assert worst < 1e-5, worst
    s = grades.stats
    assert s.padded_tokens == s.suffix_tokens  # nothing padded
    minimum = trie_size([e.ids for item in encoded for e in item.values()])
    assert s.forwarded <= 1.03 * minimum, (s.forwarded, minimum)
    old = fresh_grader(packed=False).grade_detailed(safety, *items)
    assert old.stats.forwarded > s.forwarded  # padding and padded conversations
    torch.testing.assert_close(grades.p_yes, old.p_yes, atol=1e-6, rtol=0)


@needs_data
def test_small_packs_split_items_and_join_them(fresh_grader, stock, safety, items):
    """A budget smaller than an item's rows cuts them over several packs; a
    pack also holds the end of one item and the start of the next (two prefixes)."""
    grader = fresh_grader(token_budget=700)
    grades = grader.grade_detailed(safety, *items)
    assert grades.stats.batches > len(items[0])
    worst, _ = worst_vs_whole_prompts(grader, stock, safety, *items, grades)
    assert worst < 1e-5, worst


@needs_data
def test_static_first_rows_pack_after_their_proposition_prefix(fresh_grader, stock, items, tmp_path):
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", STATIC_FIRST))
    grader = fresh_grader()
    grades = grader.grade_detailed(policy, *items)
    assert grades.stats.layout == "proposition"
    worst, _ = worst_vs_whole_prompts(grader, stock, policy, *items, grades)
    assert worst < 1e-5, worst


def test_identical_rows_are_one_token_rows(fresh_grader, stock, tmp_path):
    """Two propositions with the same question: an item's rows are the same
    ids, so each row after the shared part is its last token alone."""
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", MINIMAL.replace('"Is b?"', '"Is a?"')))
    grader = fresh_grader()
    convs, resps = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "x " * 30}]], ["ok", "no"]
    grades = grader.grade_detailed(policy, convs, resps)
    assert grades.stats.suffix_tokens == 4  # two items × two one-token rows
    worst, _ = worst_vs_whole_prompts(grader, stock, policy, convs, resps, grades)
    assert worst < 1e-5
    torch.testing.assert_close(grades.p_yes[:, 0], grades.p_yes[:, 1], atol=1e-6, rtol=0)


def test_empty_conversation_parts_reuse_the_prefix(fresh_grader):
    """`_extend_packed` with empty rows among others: an empty row's key/values
    are the prefix's own; the others equal a forward of the whole sequence."""
    grader = fresh_grader()
    head = tuple(range(20, 45))
    kv = grader._prefix_kv(head, grader.stats)
    rows = [(), tuple(range(50, 57)), (), (9,)]
    kvs = grader._extend_packed(kv, len(head), rows, grader.stats)
    assert kvs[0] is kv and kvs[2] is kv
    for r in (1, 3):
        (whole,) = grader._extend(None, 0, [head + rows[r]], grader.stats)
        for (k, v), (k2, v2) in zip(kvs[r], whole):
            assert k.shape == k2.shape
            torch.testing.assert_close(k, k2, atol=1e-5, rtol=0)
            torch.testing.assert_close(v, v2, atol=1e-5, rtol=0)


def test_out_of_memory_splits_a_pack_exactly(tiny_model_dir, safety):
    class Tight(HFGrader):
        """Fails like a full GPU whenever a pack has more than two rows."""
        def _packed_logits(self, groups):
            if sum(len(rows) for _, _, rows in groups) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super()._packed_logits(groups)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    convs = [[{"role": "user", "content": "q" * k}] for k in range(1, 5)]
    resps = ["a"] * 4
    tight = Tight(model, tok, token_budget=1 << 20)
    grades = tight.grade_detailed(safety, convs, resps)
    assert grades.stats.oom_splits > 0 and tight.pack_budget < 1 << 20
    plain = HFGrader(model, tok).grade(safety, convs, resps)
    torch.testing.assert_close(grades.p_yes, plain, atol=1e-6, rtol=0)


def test_non_finite_logits_are_found_after_the_call(fresh_grader, safety):
    """The check runs once per call on the device's answers, and still names the row."""
    g = fresh_grader()
    with torch.no_grad():
        g.model.get_output_embeddings().weight[:, 0] = float("nan")
    with pytest.raises(rbrlang.runtime.GraderError, match="NaN or infinite logits for item 0"):
        g.grade(safety, [[{"role": "user", "content": "hi"}]], ["x"])
