"""veRL's `compute_score` (per sample and batched) and OpenRLHF's `reward_func`
file give the same rewards as `rbrc serve` for the same inputs. Neither engine
is installed: their calls are made as their code makes them (see the docstrings
of rbrlang/integrations/verl.py and openrlhf.py)."""
from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from tests.support.files import ROOT, SAFETY
from tests.support.serving import PolicyModelText, gold_samples, http, openrlhf_body, running_server

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")

from rbrlang.errors import UsageError  # noqa: E402
from rbrlang.integrations import verl  # noqa: E402
from rbrlang.integrations.samples import SampleError  # noqa: E402
from rbrlang.rewards import RBRReward  # noqa: E402
from rbrlang.serve import create_app  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.usefixtures("torch_one_thread")]
FILE = ROOT / "rbrlang" / "integrations" / "openrlhf_reward_func.py"


@pytest.fixture
def env(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("RBR_POLICY", str(SAFETY))
    monkeypatch.setenv("RBR_GRADER", str(tiny_model_dir))
    monkeypatch.setenv("RBR_STRIP_SUFFIX", "</s>")
    monkeypatch.delenv("RBR_RM", raising=False)


@pytest.fixture(scope="module")
def served(tiny_model_dir, safety, tiny_grader):
    """The server's rewards for four gold samples (label: category + messages)."""
    from transformers import AutoTokenizer

    texts = PolicyModelText(AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    samples = gold_samples(4)
    body = openrlhf_body(texts, samples)
    # The default device, as the integrations load the grader that these rewards are compared with.
    reward = RBRReward(safety, tiny_grader(device="auto"))
    with running_server(create_app(reward, strip_suffixes=["</s>"])) as (url, _):
        answer = http().post(url + "/get_reward", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return samples, body, answer.json()


def verl_columns(samples):
    """What veRL's reward managers pass: the dataset's reward_model.ground_truth and extra_info."""
    return ([s["category"] for s in samples],
            [{"messages": s["messages"], "category": s["category"], "num_turns": None, "rollout_reward_scores": {}}
             for s in samples])


def test_verl_compute_score_equals_the_server(env, served):
    samples, _, answer = served
    truths, infos = verl_columns(samples)
    # naive manager: one call per sample, by keyword
    single = [verl.compute_score(data_source="rbr/safety", solution_str=s["completion"], ground_truth=g,
                                 extra_info=e) for s, g, e in zip(samples, truths, infos)]
    # batch manager: one call for the batch
    batch = verl.compute_score_batch(data_sources=["rbr/safety"] * 4, solution_strs=[s["completion"] for s in samples],
                                     ground_truths=truths, extra_infos=infos)
    # prime manager: positional (data_source, completion, reference, extra_info)
    positional = verl.compute_score("rbr/safety", samples[0]["completion"], truths[0], infos[0])
    assert all(isinstance(x, float) for x in single + batch)
    assert single == pytest.approx(answer["rewards"], abs=1e-6)
    assert batch == pytest.approx(answer["rewards"], abs=1e-6)
    assert positional == pytest.approx(answer["rewards"][0], abs=1e-6)


def test_verl_dict_results_and_other_column_shapes(env, served):
    samples, _, answer = served
    s = samples[0]
    # ground_truth as the category, messages as JSON text (a parquet-friendly column)
    out = verl.compute_score("x", s["completion"], s["category"], {"messages": json.dumps(s["messages"])},
                             return_dict=True, reward_router_address=None)
    assert set(out) == {"score", "rbr", "rbr_routed"} and out["rbr_routed"] == 1.0
    assert out["score"] == pytest.approx(answer["rewards"][0], abs=1e-6)
    np = pytest.importorskip("numpy")
    arr = np.array(s["messages"], dtype=object)  # lists read back from parquet can be arrays
    assert verl.compute_score("x", s["completion"], "", {"messages": arr, "category": s["category"]}) == \
        pytest.approx(answer["rewards"][0], abs=1e-6)


def test_verl_errors_name_the_sample(env, monkeypatch):
    with pytest.raises(SampleError, match="extra_info has no `messages`"):
        verl.compute_score("x", "hi", "C-R", {"category": "C-R"})
    with pytest.raises(SampleError, match="sample 1: no `category`"):
        verl.compute_score_batch(["x", "x"], ["a", "b"], ["C-R", ""],
                                 [{"messages": [{"role": "user", "content": "q"}]}] * 2)
    with pytest.raises(SampleError, match="not JSON messages"):
        verl.compute_score("x", "hi", "C-R", {"messages": "[{oops"})
    monkeypatch.delenv("RBR_POLICY")
    with pytest.raises(UsageError, match="RBR_POLICY"):
        verl.compute_score("x", "hi", "C-R", {"messages": [{"role": "user", "content": "q"}]},
                           grader="unused")


def load_reward_func_file():
    """As OpenRLHF does (openrlhf/utils/agent.py, SingleTurnAgentExecutor.__init__)."""
    spec = importlib.util.spec_from_file_location("reward_func", str(FILE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


def test_openrlhf_reward_func_file_equals_the_server(env, served):
    _, body, answer = served
    reward_func = load_reward_func_file()

    async def fetch():  # OpenRLHF's _fetch_rewards_via_func: one sample per call, threads at once
        return await asyncio.gather(*(asyncio.to_thread(reward_func, [q], [p], [label]) for q, p, label in
                                      zip(body["query"], body["prompts"], body["labels"])))

    results = asyncio.run(fetch())
    assert [float(r["rewards"][0]) for r in results] == pytest.approx(answer["rewards"], abs=1e-6)
    for r in results:  # what samples_generator.py then does with each answer
        assert torch.tensor([r["rewards"]]).numel() == 1 and torch.tensor([r["scores"]]).numel() == 1
        assert set(r["extra_logs"]) == {"rbr_routed", "rbr"}
        assert all(v.flatten()[0].item() is not None for v in r["extra_logs"].values())
    from rbrlang.integrations.loading import batcher_for, shared_reward

    assert batcher_for(shared_reward()).stats.samples >= 4  # the calls went through the one grader thread
    # A whole batch in one call gives the same numbers.
    whole = reward_func(body["query"], body["prompts"], body["labels"])
    assert whole["rewards"].tolist() == pytest.approx(answer["rewards"], abs=1e-5)
