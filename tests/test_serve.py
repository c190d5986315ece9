"""`rbrc serve`: OpenRLHF's remote reward protocol on a real uvicorn server
(127.0.0.1, a free port) with a tiny real grader and compiled/safety."""
from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest

from tests.support.files import SAFETY
from tests.support.serving import (PolicyModelText, gold_samples, http, openrlhf_body, running_server,
                                   signal_with_a_request_in_flight)

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rbrlang.policy import load_policy  # noqa: E402
from rbrlang.rewards import RBRReward  # noqa: E402
from rbrlang.serve import create_app  # noqa: E402
from rbrlang.integrations.batching import Batcher  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),  # random weights: low mass
              pytest.mark.usefixtures("torch_one_thread")]
EOS = "</s>"  # the tiny tokenizer's end of turn, left in OpenRLHF's query by decode(skip_special_tokens=False)


@pytest.fixture(scope="module")
def grader(tiny_grader):
    # `rbrc serve`'s default device: a test compares this module's rewards with a served process's.
    return tiny_grader(device="auto")


@pytest.fixture(scope="module")
def reward(safety, grader):
    return RBRReward(safety, grader)


@pytest.fixture(scope="module")
def texts(tiny_model_dir):
    from transformers import AutoTokenizer

    return PolicyModelText(AutoTokenizer.from_pretrained(str(tiny_model_dir)))


@pytest.fixture(scope="module")
def served(reward):
    with running_server(create_app(reward, max_batch=16, batch_window_ms=20, strip_suffixes=[EOS])) as (url, srv):
        yield url


def post(url, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return http().post(url + "/get_reward", content=data, headers={"content-type": "application/json"},
                       timeout=120, **kw)


def test_rewards_equal_the_in_process_reward(served, reward, texts):
    samples = gold_samples(4)
    body = openrlhf_body(texts, samples, label="json")
    body["labels"][1] = json.loads(body["labels"][1])  # a dict label column arrives as a JSON object
    answer = post(served, body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    expected = reward([s["messages"] for s in samples], [s["completion"] for s in samples],
                      categories=[s["category"] for s in samples])
    assert got["rewards"] == pytest.approx(expected.rewards, abs=1e-6)
    assert got["scores"] == got["rewards"]
    assert got["extra_logs"] == {"rbr_routed": [1.0] * 4, "rbr": pytest.approx(expected.rbr, abs=1e-6)}

    # Without messages in the label, the grader reads the templated prompt as one user message.
    plain = openrlhf_body(texts, samples[:2], label="category")
    got = post(served, plain).json()
    fallback = reward([[{"role": "user", "content": p}] for p in plain["prompts"]],
                      [s["completion"] for s in samples[:2]], categories=[s["category"] for s in samples[:2]])
    assert got["rewards"] == pytest.approx(fallback.rewards, abs=1e-6)
    assert "<|user|>" in plain["prompts"][0]  # the markup the fallback passes on


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 400, "not JSON"),
    ([1, 2], 400, "JSON object"),
    ({"query": ["a"], "prompts": ["a"]}, 422, "'labels'"),
    ({"query": "a", "prompts": ["a"], "labels": ["C-R"]}, 422, "`query` must be a list"),
    ({"query": ["ab", "cd"], "prompts": ["a"], "labels": ["C-R"]}, 422, "one entry per sample"),
    ({"query": ["ab"], "prompts": ["a"], "labels": [""]}, 422, "label is empty"),
    ({"query": ["ab"], "prompts": ["a"], "labels": ['{"category": "C-R"']}, 422, "not valid JSON"),
    ({"query": ["ab"], "prompts": ["a"], "labels": ['{"categroy": "C-R"}']}, 422, "unknown key"),
    ({"query": ["ab"], "prompts": ["a"], "labels": [{"response_type": "nope"}]}, 422, "unknown response type"),
    ({"query": ["ab"], "prompts": ["a"], "labels": [{"category": "C-R", "messages": [{"role": "user"}]}]},
     422, "`messages`: message 0"),
    ({"query": ["xyz"], "prompts": ["abc"], "labels": ["C-R"]}, 422, "does not start with its prompt"),
    ({"query": [7], "prompts": ["a"], "labels": ["C-R"]}, 422, "must be a string"),
    # the types are named as JSON names them, not as Python does (NoneType, dict)
    ({"query": ["ab"], "prompts": ["a"], "labels": [None]}, 422, "JSON object, not null"),
    ({"query": ["ab"], "prompts": ["a"], "labels": {"C-R": 1}}, 422, "per sample), not an object"),
])
def test_malformed_requests_get_a_4xx_and_the_server_stays_healthy(served, texts, body, status, says):
    answer = post(served, body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    health = http().get(served + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_wrong_method_and_route_and_a_valid_request_after_errors(served, texts):
    assert http().get(served + "/get_reward", timeout=30).status_code == 405
    assert http().post(served + "/nope", timeout=30).status_code == 404
    ok = post(served, openrlhf_body(texts, gold_samples(1)))
    assert ok.status_code == 200 and len(ok.json()["rewards"]) == 1
    health = http().get(served + "/health", timeout=30).json()
    assert health["policy"] == "safety" and health["batching"]["max_batch"] == 16
    assert health["batching"]["samples"] >= 1


def test_whitespace_changes_in_the_prompt_round_trip_are_tolerated(served, reward):
    msgs = [{"role": "user", "content": "How do I pick a lock?"}]
    body = {"query": ["<|user|>\nHow do I pick a lock?\n<|assistant|>\nNo.</s>"],
            "prompts": ["<|user|>\n How do I pick a lock?\n<|assistant|>\n"],  # one space the query lost
            "labels": [{"category": "C-R", "messages": msgs}]}
    got = post(served, body).json()
    assert got["rewards"] == pytest.approx(reward([msgs], ["No."], categories=["C-R"]).rewards, abs=1e-6)


def test_unrouted_samples_get_zero_or_the_rm_score(tmp_path, grader, tiny_model_dir, texts):
    from rbrlang.integrations.reward_model import HFRewardModel
    from tests.support.tiny_rm import build_tiny_rm

    doc = json.loads((SAFETY / "policy.json").read_text())
    doc["default_route"] = None
    folder = tmp_path / "safety"
    folder.mkdir()
    (folder / "policy.json").write_text(json.dumps(doc))
    (folder / "templates").symlink_to(SAFETY / "templates")
    policy = load_policy(folder)
    samples = gold_samples(2)
    samples[1] = {**samples[1], "category": "not-a-category"}
    body = openrlhf_body(texts, samples)
    with running_server(create_app(RBRReward(policy, grader), strip_suffixes=[EOS])) as (url, _):
        got = post(url, body).json()
    assert got["rewards"][1] == 0.0 and got["extra_logs"]["rbr_routed"] == [1.0, 0.0]

    rm = HFRewardModel.from_pretrained(str(build_tiny_rm(tmp_path / "rm", tiny_model_dir)))
    with running_server(create_app(RBRReward(policy, grader, rm), strip_suffixes=[EOS])) as (url, _):
        got = post(url, body).json()
    scores = rm([s["messages"] for s in samples], [s["completion"] for s in samples])
    assert got["extra_logs"]["rm"] == pytest.approx(scores, abs=1e-5)
    assert got["rewards"][1] == pytest.approx(scores[1], abs=1e-5)  # the RM alone decides where unrouted
    assert got["rewards"][0] == pytest.approx(got["extra_logs"]["rbr"][0] + scores[0], abs=1e-5)


def minimal_samples(n):
    return [{"messages": [{"role": "user", "content": f"Question number {i}?"}],
             "completion": f"Answer {i % 7}.", "category": "C-R" if i % 2 else "other"} for i in range(n)]


async def _clients(url, bodies, clients):
    """Send every body from `clients` concurrent clients; answers in body order."""
    httpx = http()
    answers = [None] * len(bodies)
    todo = iter(range(len(bodies)))

    async def client(c):
        for i in todo:
            answers[i] = await c.post(url + "/get_reward", json=bodies[i])

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    return answers


def test_concurrent_requests_are_batched_and_none_is_lost(minimal, grader, texts):
    """The bench's load, reduced: 200 one-sample requests from 16 clients."""
    reward = RBRReward(minimal, grader)
    samples = minimal_samples(200)
    bodies = [openrlhf_body(texts, [s]) for s in samples]
    with running_server(create_app(reward, max_batch=32, batch_window_ms=5, strip_suffixes=[EOS])) as (url, _):
        answers = asyncio.run(_clients(url, bodies, 16))
        stats = http().get(url + "/health", timeout=30).json()["batching"]
    assert [a.status_code for a in answers] == [200] * 200
    expected = reward([s["messages"] for s in samples], [s["completion"] for s in samples],
                      categories=[s["category"] for s in samples]).rewards
    assert [a.json()["rewards"][0] for a in answers] == pytest.approx(expected, abs=1e-6)
    assert stats["samples"] == 200 and stats["requests"] == 200
    assert stats["mean_batch"] > 1 and stats["largest_batch"] <= 32


def test_graceful_shutdown_finishes_requests_in_flight(minimal, grader, texts):
    reward = RBRReward(minimal, grader)
    samples = minimal_samples(8)
    results = [None] * 8
    # A long window keeps the requests waiting in the server while it is told to stop.
    app = create_app(reward, max_batch=64, batch_window_ms=3000, strip_suffixes=[EOS])
    with running_server(app) as (url, srv):
        def send(i):
            results[i] = post(url, openrlhf_body(texts, [samples[i]]))
        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while app.state.batcher.in_flight < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.batcher.in_flight == 8 and app.state.batcher.stats.requests == 0
        srv.should_exit = True  # what SIGINT/SIGTERM do
        for t in threads:
            t.join(timeout=60)
    expected = reward([s["messages"] for s in samples], [s["completion"] for s in samples],
                      categories=[s["category"] for s in samples]).rewards
    assert [r.status_code for r in results] == [200] * 8
    assert [r.json()["rewards"][0] for r in results] == pytest.approx(expected, abs=1e-6)
    assert not app.state.batcher.running
    with pytest.raises(http().ConnectError):
        http().get(url + "/health", timeout=5)


def test_the_batcher_keeps_requests_whole_and_isolates_a_failing_one():
    def score(items):
        if "poison" in items:
            raise ValueError("poison")
        return [x.upper() for x in items]

    async def run():
        b = Batcher(score, max_batch=4, window_s=0.05)
        await b.start()
        jobs = [["a", "b", "c"], ["d", "e"], ["poison"], ["f"], ["g", "h", "i", "j", "k"]]
        out = await asyncio.gather(*(b.submit(j) for j in jobs), return_exceptions=True)
        await b.stop()
        return out, b.stats

    out, stats = asyncio.run(run())
    assert out[0] == ["A", "B", "C"] and out[1] == ["D", "E"] and out[3] == ["F"]
    assert out[4] == ["G", "H", "I", "J", "K"]  # larger than max_batch: its own batch, not split
    assert isinstance(out[2], ValueError) and stats.failed_requests == 1
    assert stats.samples == 11 and sorted(stats.sizes) == [1, 2, 3, 5]


def test_stop_scores_what_is_still_queued():
    async def run():
        b = Batcher(lambda items: [x * 2 for x in items], max_batch=2, window_s=10.0)
        await b.start()
        tasks = [asyncio.create_task(b.submit([i])) for i in range(7)]
        await asyncio.sleep(0.05)  # all queued; the worker waits in its (long) window
        await b.stop()
        return [t.result() for t in tasks], b.stats

    out, stats = asyncio.run(run())
    assert out == [[2 * i] for i in range(7)] and stats.batches == 4


def test_cli_errors_are_one_line(rbrc, tmp_path, tiny_model_dir):
    code, _, err = rbrc("serve", tmp_path / "missing", "--grader", tiny_model_dir)
    assert code == 1 and "Traceback" not in err
    code, _, err = rbrc("serve", SAFETY, "--grader", tiny_model_dir, "--max-batch", "0")
    assert code == 2 and "--max-batch" in err
    code, _, err = rbrc("serve", SAFETY, "--grader", tmp_path / "nope")
    assert code == 1 and "no such folder" in err
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = rbrc("serve", SAFETY, "--grader", tiny_model_dir, "--port", taken.getsockname()[1])
    assert code == 1 and "in use" in err and "Traceback" not in err


def test_rbrc_serve_finishes_a_request_in_flight_on_sigterm(tiny_model_dir, texts, reward):
    samples = gold_samples(1)
    # A long batch window holds the request in the server while SIGTERM arrives.
    code, err, answer = signal_with_a_request_in_flight(
        [SAFETY, "--grader", tiny_model_dir, "--strip-suffix", EOS, "--batch-window-ms", "2000", "--log-level",
         "warning"], lambda url: post(url, openrlhf_body(texts, samples)), signal.SIGTERM)
    # uvicorn shuts down gracefully, then raises the signal again: rbrc ends with 143, as documented.
    assert code == 143 and "Traceback" not in err, err
    # The grader's warning about this request's answers (random weights: little mass on
    # yes/no), printed while serving: one line, no Python file, line or class.
    assert "rbrc serve: warning: the grader put less than 50%" in err, err
    assert ".py:" not in err and "GraderWarning" not in err, err
    expected = reward([samples[0]["messages"]], [samples[0]["completion"]], categories=[samples[0]["category"]])
    assert answer["r"].status_code == 200
    assert answer["r"].json()["rewards"] == pytest.approx(expected.rewards, abs=1e-6)


def test_rbrc_serve_serves_the_fitted_reward_and_refuses_stale_weights(rbrc, tmp_path, tiny_model_dir):
    """The server reads weights.json as load_policy does: a stale one stops it before the
    model loads (it used to serve the unfitted expected class score without a word)."""
    import shutil

    from rbrlang.policy import load_policy
    from rbrlang.policy.weights import FittedWeights, write_weights

    folder = tmp_path / "safety"
    shutil.copytree(SAFETY, folder)
    policy = load_policy(folder)
    rt = policy.response_type("comply")
    write_weights(folder, policy, [FittedWeights("comply", rt.schema_hash, rt.features,
                                                 (0.5,) * len(rt.features), 0.0, 1.0, 0.01, "")])
    assert "comply" in load_policy(folder).weights
    weights = folder / "weights.json"
    weights.write_text(weights.read_text().replace(rt.schema_hash, "0" * 64))  # as if the policy changed since
    code, _, err = rbrc("serve", folder, "--grader", tiny_model_dir, "--port", "1")
    assert code == 1 and "weights.json" in err and "Traceback" not in err, err
