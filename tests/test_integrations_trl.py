"""The TRL GRPO/RLOO reward function, called exactly as trl 1.12's trainers call
`reward_funcs` (keyword arguments: prompts, completions, completion_ids, the
dataset's extra columns, trainer_state, log_extra, log_metric)."""
from __future__ import annotations

import pickle
from collections import defaultdict

import pytest
import torch

from rbrlang.errors import PolicyError
from rbrlang.integrations.trl import reward_function

from tests.support.files import SHARED, gold_rows
from tests.support.policies import copy_safety

pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")]


def call_like_trl(func, prompts, completions, **columns):
    """What GRPOTrainer._calculate_rewards does, down to None -> NaN."""
    metrics, extra = defaultdict(list), defaultdict(list)
    out = func(prompts=prompts, completions=completions, completion_ids=[[1, 2]] * len(prompts), **columns,
               trainer_state=object(), log_extra=lambda c, v: extra[c].extend(v),
               log_metric=lambda n, v: metrics[n].append(v))
    assert len(out) == len(prompts)
    return torch.tensor([r if r is not None else torch.nan for r in out], dtype=torch.float64), metrics, extra


def test_conversational_and_plain_prompts(safety, grader):
    rows = gold_rows(4)
    func = reward_function(safety, grader)
    assert func.__name__ == "rbr"
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    cats = [r["category"] for r in rows]
    got, metrics, extra = call_like_trl(func, prompts, completions, category=cats, other_column=[1] * 4)
    texts = [c[0]["content"] for c in completions]
    for i in range(4):
        rt = safety.route(cats[i])
        p = grader.grade(safety, [prompts[i]], [texts[i]]).double()
        assert float(got[i]) == pytest.approx(float(safety.reward(rt, safety.features(rt, p))[0]), abs=1e-5)
    assert metrics["rbr/routed"] == [1.0]
    assert {n.split("/")[1] for n in metrics if n != "rbr/routed"} == {safety.route(c) for c in cats}
    assert extra["rbr_response_type"] == [safety.route(c) for c in cats]
    assert all(c in safety.response_type(safety.route(cats[0])).classes for c in extra["rbr_class"])

    # plain prompts: one user message each
    last = [p[-1]["content"] for p in prompts]
    plain, _, _ = call_like_trl(func, last, texts, response_type=["comply"] * 4)
    want = [float(safety.reward("comply", safety.features(
        "comply", grader.grade(safety, [[{"role": "user", "content": q}]], [t]).double()))[0])
        for q, t in zip(last, texts)]
    assert plain.tolist() == pytest.approx(want, abs=1e-5)


def test_unrouted_prompts_are_none_for_trl(tmp_path, grader):
    folder = copy_safety(tmp_path / "safety", lambda doc: doc.update(default_route=None))
    func = reward_function(folder, grader, name="safety_rbr")
    got, metrics, extra = call_like_trl(func, ["hi", "hello"], ["hey", "yo"], category=["elsewhere", "C-R"])
    assert torch.isnan(got[0]) and not torch.isnan(got[1])
    assert metrics["rbr/routed"] == [0.5] and extra["rbr_response_type"] == ["", "hard_refuse"]
    # pickles (trainers send reward functions to workers), keeping its name
    again = pickle.loads(pickle.dumps(func))
    assert again.__name__ == "safety_rbr"
    torch.testing.assert_close(call_like_trl(again, ["hi", "hello"], ["hey", "yo"],
                                             category=["elsewhere", "C-R"])[0], got, equal_nan=True)


def test_missing_routing_column_is_a_clear_error(safety, grader):
    func = reward_function(safety, grader)
    with pytest.raises(PolicyError, match="needs a `category` or `response_type` column.*were: topic"):
        call_like_trl(func, ["hi"], ["hey"], topic=["x"])
    with pytest.raises(PolicyError, match="prompt 0: a prompt is a string or a list of messages"):
        call_like_trl(func, [3], ["hey"], category=["C-R"])
