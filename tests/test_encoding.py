"""Prompt ids: what the grader reads is exactly what its tokenizer gives the
whole chat-formatted prompt, for every tokenizer family, with the shared
prefixes still shared."""
from __future__ import annotations

import copy

import pytest
import torch

import rbrlang
from rbrlang.runtime import HFGrader
from rbrlang.runtime.encoding import PromptEncoder
from tests.support import tokenizers as families
from tests.support.policies import MINIMAL, STATIC_FIRST
from tests.support.files import SHARED, gold_rows, write
from tests.support.reference import full_forward, trie_size

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")
pytestmark = [needs_data, pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")]


@pytest.fixture(scope="module")
def items():
    """20 gold items in file order, as (conversation, response)."""
    return [(r["prompt"], r["completion"][0]["content"]) for r in gold_rows(20, shortest=False)]


@pytest.fixture(scope="module")
def trained_tokenizers(safety, items):
    corpus = [safety.render(n, c, r) for n in ("apology", "judgement") for c, r in items[:10]]
    return {family: families.trained(family, corpus) for family in families.FAMILIES}


@pytest.fixture(scope="module")
def real_tokenizers():
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = families.real(name)
        if loaded[name] is None:
            pytest.skip(f"ggml-vocab-{name}.gguf not in {families.vocab_dir()}: `bash .ci/run` fetches it "
                        f"(or point ${families.VOCAB_ENV} at a folder holding it)")
        return loaded[name]
    return get


def whole_prompt_ids(tokenizer, prompt: str, chat: bool) -> tuple[int, ...]:
    """The reference, written out: the tokenizer on the whole prompt."""
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    start = () if tokenizer.bos_token_id is None else (tokenizer.bos_token_id,)
    return start + tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def check_exact_and_shared(tokenizer, policy, items, chat: bool, layout: str):
    """Every row's ids are the whole prompt's; the marked prefixes are shared
    as claimed; sharing by `layout` forwards within 5% of the trie minimum."""
    encoder = PromptEncoder(tokenizer, use_chat_template=chat)
    encoded = encoder.encode_items(policy, [c for c, _ in items], [r for _, r in items])
    differ = [(i, name) for i, (conv, resp) in enumerate(items) for name, enc in encoded[i].items()
              if enc.ids != whole_prompt_ids(tokenizer, policy.render(name, conv, resp), chat)]
    assert not differ, f"{len(differ)} rows differ from the whole prompt's ids, first {differ[0]}"
    rows = [e for item in encoded for e in item.values()]
    for item in encoded:
        first = next(iter(item.values()))
        assert first.head > 0
        for e in item.values():
            assert (e.head, e.item_prefix) == (first.head, first.item_prefix)
            assert e.ids[:e.item_prefix] == first.ids[:first.item_prefix]
            assert e.head <= e.prop_prefix < len(e.ids) and e.item_prefix < len(e.ids)
    if layout == "item":
        cost = sum(len(e.ids) - e.item_prefix for e in rows) + sum(
            next(iter(i.values())).item_prefix - next(iter(i.values())).head for i in encoded) + sum(
            len(h) for h in {e.ids[:e.head] for e in rows})
    else:
        cost = sum(len(e.ids) - e.prop_prefix for e in rows) + sum(
            len(p) for p in {e.ids[:e.prop_prefix] for e in rows})
        # Every item of a proposition starts with the same static ids.
        for name in encoder.graded(policy):
            assert len({item[name].ids[:item[name].prop_prefix] for item in encoded}) == 1
    assert cost <= 1.05 * trie_size([e.ids for e in rows]), (cost, trie_size([e.ids for e in rows]))
    return encoded


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
@pytest.mark.parametrize("family", families.FAMILIES)
def test_trained_tokenizers_read_the_whole_prompt(trained_tokenizers, safety, items, family, chat):
    check_exact_and_shared(trained_tokenizers[family], safety, items, chat, "item")


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
@pytest.mark.parametrize("name", list(families.REAL))
def test_real_tokenizers_read_the_whole_prompt(real_tokenizers, safety, items, name, chat):
    """GPT-2 ("\\n\\nQuestion" splits "\\n", "\\n", "Question"), Llama-3, Qwen-2,
    and Llama-2 sentencepiece (a "▁" before the text only): 20 gold items ×
    every grader proposition of the safety policy."""
    check_exact_and_shared(real_tokenizers(name), safety, items, chat, "item")


@pytest.mark.parametrize("source", ["real:gpt-2", "real:llama-spm", "trained:gpt2", "trained:metaspace"])
def test_static_first_templates_share_per_proposition(real_tokenizers, trained_tokenizers, tmp_path, items, source):
    kind, name = source.split(":")
    tokenizer = real_tokenizers(name) if kind == "real" else trained_tokenizers[name]
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", STATIC_FIRST))
    check_exact_and_shared(tokenizer, policy, items, True, "proposition")


TURNS = 'rbr 1\ngrader {\n  system "You grade. Reply yes or no."\n  prefill "Answer:"\n}\n' + MINIMAL[len("rbr 1\n"):]


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
def test_system_and_prefill_are_in_the_ids(real_tokenizers, tmp_path, items, chat):
    """The grader block's `system` is the chat's system message (the template's
    own default replaced) and its `prefill` begins the answer turn: the ids are
    still exactly the whole text's, and the prefixes are still shared."""
    tokenizer = real_tokenizers("llama-bpe")
    policy = rbrlang.compile_file(write(tmp_path / "t.rbr", TURNS))
    encoder = PromptEncoder(tokenizer, use_chat_template=chat)
    encoded = encoder.encode_items(policy, [c for c, _ in items[:4]], [r for _, r in items[:4]])
    for (conv, resp), item in zip(items[:4], encoded):
        for name, enc in item.items():
            prompt = policy.render(name, conv, resp)
            if chat:
                text = tokenizer.apply_chat_template([{"role": "system", "content": policy.system},
                                                      {"role": "user", "content": prompt}], tokenize=False,
                                                     add_generation_prompt=True) + "Answer:"
                want = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            else:
                text = "You grade. Reply yes or no.\n\n" + prompt + "\nAnswer:"
                want = (tokenizer.bos_token_id,) + tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            assert enc.ids == want
            assert tokenizer.decode(enc.ids).endswith("Answer:")
            assert 0 < enc.head <= enc.prop_prefix < len(enc.ids) and enc.item_prefix < len(enc.ids)
    assert "You grade." in tokenizer.decode(encoded[0]["a"].ids[:encoded[0]["a"].head])


def test_chat_turns_are_part_of_the_grade_cache_key(fresh_grader, tmp_path):
    """The same template with a system message or a prefill is another prompt:
    the grade cache does not answer it with the plain policy's P(yes)."""
    plain = rbrlang.compile_file(write(tmp_path / "p.rbr", MINIMAL))
    turns = rbrlang.compile_file(write(tmp_path / "t.rbr", TURNS))
    grader = fresh_grader(cache=tmp_path / "grades.sqlite")
    conv, resp = [{"role": "user", "content": "hi"}], "Hello!"
    first = grader.grade_detailed(plain, [conv], [resp])
    other = grader.grade_detailed(turns, [conv], [resp])
    again = grader.grade_detailed(turns, [conv], [resp])
    assert (first.stats.cached, other.stats.cached, again.stats.cached) == (0, 0, 2)
    assert not torch.equal(first.p_yes, other.p_yes)
    assert torch.equal(other.p_yes, again.p_yes)


def test_encode_item_is_encode_items(trained_tokenizers, safety, items):
    encoder = PromptEncoder(trained_tokenizers["gpt2"])
    many = encoder.encode_items(safety, [c for c, _ in items[:3]], [r for _, r in items[:3]])
    assert many == [encoder.encode_item(safety, c, r) for c, r in items[:3]]


@pytest.mark.parametrize("family", ["metaspace", "gpt2"])
def test_grader_with_other_tokenizers_equals_full_forward(trained_tokenizers, safety, items, family):
    """The fast path with a tokenizer whose token boundaries do not fall at
    the prompt's line breaks: the same P(yes) as one forward of the whole ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = trained_tokenizers[family]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=tok.pad_token_id, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    stock = LlamaForCausalLM(copy.deepcopy(config)).eval()  # the reference keeps stock SDPA
    stock.load_state_dict(model.state_dict())
    grader = HFGrader(model, tok, token_budget=4096)
    assert stock.config._attn_implementation == "sdpa"
    convs, resps = [c for c, _ in items[:3]], [r for _, r in items[:3]]
    grades = grader.grade_detailed(safety, convs, resps)
    assert grades.stats.layout == "item" and grades.stats.prefix_tokens > 0
    answers = grader.answer_tokens(safety)
    encoded = grader.encoder.encode_items(safety, convs, resps)
    for j, name in enumerate(safety.proposition_names):
        if not safety.proposition(name).graded:
            continue
        for i in range(3):
            assert grader.encode(safety, name, convs[i], resps[i]) == list(encoded[i][name].ids)
            p, _ = full_forward(stock, encoded[i][name].ids, answers)
            assert abs(p - float(grades.p_yes[i, j])) < 1e-5


def test_common_length_is_the_common_prefix():
    from hypothesis import given, strategies as st

    from rbrlang.runtime.encoding import common_length

    @given(st.lists(st.integers(0, 2), max_size=40), st.lists(st.integers(0, 2), max_size=40),
           st.integers(0, 40))
    def check(a, b, shared):
        a, b = tuple(a), tuple(a[:shared] + b)
        expected = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert common_length(a, b) == common_length(b, a) == expected
    check()



@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from tests.support.real_model import FETCH, smollm2

    path = smollm2()
    if path is None:
        pytest.skip(f"SmolLM2 is not cached here: {FETCH}")
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
def test_the_real_judges_tokenizer_reads_the_whole_prompt(smollm2_tokenizer, safety, items, chat):
    """SmolLM2-135M-Instruct's own tokenizer (GPT-2-style byte-level BPE with a
    49k vocabulary, converted from its GGUF file) and its own ChatML template,
    which adds a default system turn before the user's: 8 gold items × every
    grader proposition."""
    assert "You are a helpful AI assistant named SmolLM" in smollm2_tokenizer.chat_template
    check_exact_and_shared(smollm2_tokenizer, safety, items[:8], chat, "item")
