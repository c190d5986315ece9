"""OpenRLHF 0.11's own reward client (`openrlhf.utils.agent.SingleTurnAgentExecutor`)
against `rbrc serve` and the reward_func file: several servers as one comma-separated
`--reward.remote_url`, its 180 s timeout, `scores` for dynamic filtering, and the
reason for a 4xx logged at WARNING where the user can see it (OpenRLHF logs failures
at INFO and drops the body).

OpenRLHF pins flash-attn and deepspeed, which do not install on a CPU machine; its
client needs neither, so CI installs the released wheel with `--no-deps` in the veRL
venv (which has aiohttp, sympy, pylatexenc) and these tests import its real code.
Without it (the main venv) the tests that need it are skipped, and say so."""
from __future__ import annotations

import asyncio
import inspect
import json
import logging

import pytest

from tests.support.files import ROOT, SAFETY
from tests.support.serving import PolicyModelText, gold_samples, http, openrlhf_body, running_server

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")

from rbrlang.integrations.openrlhf import answer  # noqa: E402
from rbrlang.integrations.samples import ItemReward  # noqa: E402
from rbrlang.rewards import RBRReward  # noqa: E402
from rbrlang.serve import create_app  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.usefixtures("torch_one_thread")]
FILE = ROOT / "rbrlang" / "integrations" / "openrlhf_reward_func.py"


def openrlhf_client():
    agent = pytest.importorskip("openrlhf.utils.agent", reason="OpenRLHF's client (pip install --no-deps "
                                                               "openrlhf==0.11.2, as .ci/run does) is not installed")
    return agent.SingleTurnAgentExecutor


@pytest.fixture(scope="module")
def request_body(tiny_model_dir):
    from transformers import AutoTokenizer

    samples = gold_samples(4)
    return samples, openrlhf_body(PolicyModelText(AutoTokenizer.from_pretrained(str(tiny_model_dir))), samples)


def class_scores(safety, grader, samples) -> list[float]:
    """Σ_c P(c) · score(c), recomputed from the grader, features and class scores."""
    out = []
    for s in samples:
        rt = safety.response_type(safety.route(s["category"]))
        feats = safety.features(rt.name, grader.grade(safety, [s["messages"]], [s["completion"]]).double())
        out.append(float(sum(p * c for p, c in zip(feats[0, -len(rt.classes):].tolist(), rt.scores))))
    return out


def test_scores_are_the_reward_or_the_expected_class_score():
    items = [ItemReward(total=2.5, rbr=2.5, rm=None, routed=True, response_type="comply", class_score=0.75),
             ItemReward(total=None, rbr=0.0, rm=None, routed=False, response_type=None)]
    assert answer(items, False, -1.0)["scores"] == [2.5, -1.0]
    assert answer(items, False, -1.0, scores="class_score")["scores"] == [0.75, -1.0]
    with pytest.raises(ValueError, match="reward, class_score"):
        answer(items, False, scores="rank")


def test_openrlhfs_client_spreads_requests_over_comma_separated_servers(request_body, safety, tiny_grader,
                                                                          fresh_grader):
    """`--reward.remote_url http://a/get_reward,http://b/get_reward`: train_ppo_ray splits it at commas,
    and the executor sends each rollout's request to the next server in turn."""
    Executor = openrlhf_client()
    samples, body = request_body
    one, two = RBRReward(safety, tiny_grader()), RBRReward(safety, fresh_grader())
    with running_server(create_app(one, strip_suffixes=["</s>"], scores="class_score")) as (a, srv_a), \
            running_server(create_app(two, strip_suffixes=["</s>"], scores="class_score")) as (b, srv_b):
        executor = Executor(f"{a}/get_reward,{b}/get_reward".split(","))

        async def fetch():  # one sample per call, many at once, as SingleTurnAgentExecutor.execute does
            return await asyncio.gather(*(executor._fetch_rewards_via_http([q], [p], [label]) for q, p, label in
                                          zip(body["query"], body["prompts"], body["labels"])))

        answers = [got[0] for got in asyncio.run(fetch())]
        counts = [srv.config.app.state.batcher.stats.requests for srv in (srv_a, srv_b)]
    assert counts == [2, 2]
    want = class_scores(safety, tiny_grader(), samples)
    assert [x["scores"][0] for x in answers] == pytest.approx(want, abs=1e-5)
    assert all(0.0 <= x["scores"][0] <= 1.0 for x in answers)
    direct = RBRReward(safety, tiny_grader())([s["messages"] for s in samples], [s["completion"] for s in samples],
                                              categories=[s["category"] for s in samples])
    assert [x["rewards"][0] for x in answers] == pytest.approx(direct.numbers(), abs=1e-5)


def test_the_documented_client_timeout_is_openrlhfs():
    Executor = openrlhf_client()
    assert "aiohttp.ClientTimeout(total=180)" in inspect.getsource(Executor._fetch_rewards_via_http)
    assert "180 s" in (ROOT / "docs" / "TRAINING.md").read_text()


def test_a_4xx_reason_is_logged_at_warning_by_the_server(request_body, safety, tiny_grader, caplog):
    _, body = request_body
    bad = dict(body, labels=[json.dumps({"category": "C-R", "mesages": []})] + body["labels"][1:])
    with caplog.at_level(logging.WARNING, logger="rbrlang.serve"), \
            running_server(create_app(RBRReward(safety, tiny_grader()))) as (url, _):
        got = http().post(url + "/get_reward", json=bad, timeout=60)
    assert got.status_code == 422
    logged = [r for r in caplog.records if r.name == "rbrlang.serve" and r.levelno == logging.WARNING]
    assert len(logged) == 1 and "answered 422 (sample 0)" in logged[0].getMessage()
    assert "unknown key(s) 'mesages'" in logged[0].getMessage()


def test_the_reward_func_file_through_openrlhfs_loader(request_body, safety, tiny_grader, tiny_model_dir,
                                                       monkeypatch, caplog):
    """OpenRLHF executes the file itself (`SingleTurnAgentExecutor(path)`) and calls
    `reward_func` from threads; RBR_SCORES picks the scores; a bad label is logged."""
    Executor = openrlhf_client()
    samples, body = request_body
    for name, value in (("RBR_POLICY", str(SAFETY)), ("RBR_GRADER", str(tiny_model_dir)),
                        ("RBR_STRIP_SUFFIX", "</s>"), ("RBR_SCORES", "class_score")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RBR_RM", raising=False)
    executor = Executor(str(FILE))
    assert executor.reward_func is not None and executor.reward_func.__module__ == "reward_func"
    got = asyncio.run(executor._fetch_rewards_via_func(body["query"], body["prompts"], body["labels"]))
    want = class_scores(safety, tiny_grader(device="auto"), samples)
    assert [float(x["scores"][0]) for x in got] == pytest.approx(want, abs=1e-5)
    with caplog.at_level(logging.WARNING, logger="rbrlang.integrations.openrlhf"):
        with pytest.raises(Exception, match="label is a category string or a JSON object"):
            asyncio.run(executor._fetch_rewards_via_func(body["query"][:1], body["prompts"][:1], [[1, 2]]))
    assert any("a request was not scored" in r.getMessage() and "sample 0" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
