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


# --- veRL 0.9.1's own code: its config, its reward manager, its judge mode -------------------
# These run where veRL is installed (CI: a venv of its own, `.ci/run`; it pins an older
# transformers than the main venv's); elsewhere they are skipped and say so.

def verl_overrides(*, judge: bool = False) -> list[str]:
    """The `reward.*` Hydra overrides of docs/TRAINING.md's veRL commands."""
    import re

    text = (ROOT / "docs" / "TRAINING.md").read_text()
    section = text[text.index("**veRL** (0.9)"):text.index("Instead of `reward_kwargs`")]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    words = [w for block in blocks[:2 if judge else 1] for w in re.sub(r"\\\n", " ", block).split()]
    return [w for w in words if re.match(r"\+?reward\.", w)]


def composed_config(tiny_model_dir, overrides: list[str]):
    """veRL's ppo_trainer config as `main_ppo` composes it (Hydra, veRL's own yaml files)."""
    import os

    pytest.importorskip("verl", reason="veRL (pip install verl==0.9.1, in a venv of its own: .ci/run) is not "
                                       "installed")
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    filled = [o.replace("$PWD/compiled/safety", str(SAFETY)).replace("Qwen/Qwen2.5-7B-Instruct", str(tiny_model_dir))
              for o in overrides]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer",
                       overrides=filled + [f"actor_rollout_ref.model.path={tiny_model_dir}"])


def verl_items(tokenizer, samples):
    """One DataProto per sample, shaped as veRL's agent loop hands them to the reward loop:
    left-padded prompt ids, right-padded response ids (+ EOS), the dataset's non-tensor
    columns, and the agent loop's `tool_extra_fields` (`raw_prompt`)."""
    import numpy as np
    from verl import DataProto

    out = []
    for s in samples:
        text = tokenizer.apply_chat_template(s["messages"], tokenize=False, add_generation_prompt=True)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        response = tokenizer(s["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        width, rwidth = len(prompt) + 3, len(response) + 4
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(prompt)) + prompt])
        resp = torch.tensor([response + [pad] * (rwidth - len(response))])
        mask = torch.tensor([[0] * (width - len(prompt)) + [1] * len(prompt) + [1] * len(response)
                             + [0] * (rwidth - len(response))])

        def column(value):
            arr = np.empty(1, dtype=object)
            arr[0] = value
            return arr

        out.append(DataProto.from_dict(
            tensors={"prompts": ids, "responses": resp, "attention_mask": mask,
                     "input_ids": torch.cat([ids, resp], dim=1)},
            non_tensors={"data_source": column("rbr/safety"),
                         "reward_model": column({"style": "rule", "ground_truth": s["category"]}),
                         "extra_info": column({"category": s["category"]}),
                         "tool_extra_fields": column({"raw_prompt": s["messages"]})}))
    return out


def run_verl_manager(manager, items) -> list[dict]:
    """`NaiveRewardManager.run_single` for every item at once, on the manager's event
    loop, as a reward worker's `compute_score_batch` gathers them."""
    async def gather():
        return await asyncio.gather(*(manager.run_single(d) for d in items))

    return manager.loop.run_until_complete(gather())


def expected_verl_rewards(safety, grader, tokenizer, samples) -> list[float]:
    from tests.support.rewards import expected_rewards

    seen = [tokenizer.decode(tokenizer(s["completion"], add_special_tokens=False)["input_ids"],
                             skip_special_tokens=True) for s in samples]
    return expected_rewards(safety, grader, [s["messages"] for s in samples], seen, [s["category"] for s in samples])


def test_the_documented_verl_config_through_verls_reward_manager(tiny_model_dir, safety, tiny_grader, monkeypatch):
    """TRAINING.md's overrides, composed with veRL's config; veRL's `load_reward_manager`
    builds the `naive` manager around our function; its `run_single` scores real samples."""
    from transformers import AutoTokenizer

    config = composed_config(tiny_model_dir, verl_overrides())
    assert config.reward.custom_reward_function.name == "compute_score_async"
    # The keys older docs gave (top level) leave veRL 0.9's reward config untouched.
    old = composed_config(tiny_model_dir, ["custom_reward_function.path=pkg://rbrlang.integrations.verl",
                                           "custom_reward_function.name=compute_score"])
    assert old.reward.custom_reward_function.path is None
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    monkeypatch.setenv("RBR_DEVICE", "cpu")
    monkeypatch.setenv("RBR_DTYPE", "float32")
    manager = load_reward_manager(config, tokenizer)
    assert type(manager).__name__ == "NaiveRewardManager" and manager.is_async_reward_score
    samples = gold_samples(4)
    got = run_verl_manager(manager, verl_items(tokenizer, samples))
    want = expected_verl_rewards(safety, tiny_grader(), tokenizer, samples)
    assert [g["reward_score"] for g in got] == pytest.approx(want, abs=1e-5)
    from rbrlang.integrations.loading import batcher_for, shared_reward

    stats = batcher_for(shared_reward(str(SAFETY), str(tiny_model_dir))).stats
    assert stats.largest > 1  # the concurrent samples were graded together


def test_verl_judge_mode_grades_through_the_reward_router(tiny_model_dir, safety, tiny_grader):
    """`reward.reward_model.enable=True`: the reward loop hands the manager the router's
    address; the function then grades through that server (here the tiny model behind a
    real OpenAI-compatible completions server), and loads no model itself."""
    from transformers import AutoTokenizer

    from tests.support.completions_server import CompletionsServer

    config = composed_config(tiny_model_dir, verl_overrides(judge=True))
    assert config.reward.reward_model.enable is True
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    samples = gold_samples(3)
    grader = tiny_grader()
    with CompletionsServer(grader.model, "/local/copy/of/the/judge") as server:  # served under another name
        address = server.url[len("http://"):-len("/v1")]
        manager = load_reward_manager(config, tokenizer, reward_router_address=address,
                                      reward_model_tokenizer=tokenizer)
        got = run_verl_manager(manager, verl_items(tokenizer, samples))
        assert server.behaviour.requests > 0
        from rbrlang.integrations.verl import judge_reward

        used = judge_reward(address, str(SAFETY), str(tiny_model_dir), None, tokenizer).grader
        assert type(used).__name__ == "OpenAIGrader" and used.model == "/local/copy/of/the/judge"
    want = expected_verl_rewards(safety, grader, tokenizer, samples)
    assert [g["reward_score"] for g in got] == pytest.approx(want, abs=1e-3)
