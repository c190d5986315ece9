"""The verifiers 0.4 judge plugin, through verifiers' own code: its loader resolves the
id `rbrlang-judge` from a `TaskConfig.judges` entry, and `Task.score` runs the judge on
real traces (vf.Trace with a prompt, tool turns and a sampled reply), concurrently, as
verifiers scores rollouts. The judge grades with the tiny model in process, or served
(an OpenAI-compatible completions server on 127.0.0.1, token-id prompts). verifiers
runs in a venv of its own in CI (`.ci/run`); without it these tests are skipped."""
from __future__ import annotations

import asyncio

import pytest

from tests.support.files import SAFETY
from tests.support.serving import gold_samples

vf = pytest.importorskip("verifiers.v1", reason="verifiers (pip install verifiers==0.4.0, in a venv of its own: "
                                                ".ci/run) is not installed")

pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.usefixtures("torch_one_thread")]


class SafetyData(vf.TaskData):
    category: str


def rollout(sample) -> tuple:
    """(task data, trace) for one gold sample: the prompt, a tool call and its result,
    then the final reply, sampled."""
    prompt = [vf.UserMessage(content=m["content"]) if m["role"] == "user" else
              vf.SystemMessage(content=m["content"]) if m["role"] == "system" else
              vf.AssistantMessage(content=m["content"]) for m in sample["messages"]]
    data = SafetyData(prompt=prompt, category=sample["category"])
    call = vf.ToolCall(id="call_0", name="search", arguments='{"q": "x"}')
    nodes = [vf.MessageNode(message=prompt[0])]
    for m in prompt[1:]:
        nodes.append(vf.MessageNode(parent=len(nodes) - 1, message=m))
    for m, sampled in ((vf.AssistantMessage(content="", tool_calls=[call]), True),
                       (vf.ToolMessage(tool_call_id="call_0", content="a tool result"), False),
                       (vf.AssistantMessage(content=sample["completion"]), True)):
        nodes.append(vf.MessageNode(parent=len(nodes) - 1, message=m, sampled=sampled))
    trace = vf.Trace(task=vf.TraceTask(type="SafetyTask", data=data), agent=vf.AgentInfo(config=vf.AgentConfig()),
                     nodes=nodes)
    return data, trace


def score_all(entry: dict, samples) -> list:
    """`Task.score` on every rollout at once, the judge plugged by its config entry."""
    config = vf.TaskConfig(judges=[entry])
    rollouts = [rollout(s) for s in samples]

    async def run():
        await asyncio.gather(*(vf.Task(data, config).score(trace) for data, trace in rollouts))

    asyncio.run(run())
    return [trace for _, trace in rollouts]


def expected(safety, grader, samples):
    from tests.support.rewards import expected_rewards

    return expected_rewards(safety, grader, [s["messages"] for s in samples], [s["completion"] for s in samples],
                            [s["category"] for s in samples])


def test_verifiers_loader_finds_the_judge_and_task_score_runs_it(safety, tiny_grader, tiny_model_dir):
    from rbrlang.integrations.loading import batcher_for, shared_reward
    from rbrlang.integrations.verifiers import RBRJudge, RBRJudgeConfig
    from verifiers.v1.utils.loaders import judge_class

    assert judge_class("rbrlang-judge") is RBRJudge
    samples = gold_samples(4)
    entry = {"id": "rbrlang-judge", "name": "safety", "policy": str(SAFETY), "model": str(tiny_model_dir),
             "device": "cpu", "dtype": "float32"}
    assert isinstance(vf.TaskConfig(judges=[entry]).judges[0], RBRJudgeConfig)
    traces = score_all(entry, samples)
    got = [t.rewards["safety"].score for t in traces]
    assert got == pytest.approx(expected(safety, tiny_grader(), samples), abs=1e-5)
    for trace, s in zip(traces, samples):
        rt = safety.response_type(safety.route(s["category"]))
        probs = {c: trace.metrics[f"safety/{rt.name}/{c}"] for c in rt.classes}
        assert trace.metrics["safety/routed"] == 1.0 and sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    stats = batcher_for(shared_reward(str(SAFETY), str(tiny_model_dir), None, "cpu", "float32", "hf")).stats
    assert stats.largest > 1  # concurrent rollouts were graded in one batch


def test_the_judge_grades_through_a_served_model(safety, tiny_grader, tiny_model_dir):
    from tests.support.completions_server import CompletionsServer

    samples = gold_samples(3)
    grader = tiny_grader()
    with CompletionsServer(grader.model, "judge") as server:
        entry = {"id": "rbrlang-judge", "policy": str(SAFETY), "model": "judge", "backend": "openai",
                 "base_url": server.url, "tokenizer": str(tiny_model_dir)}
        traces = score_all(entry, samples)
        assert server.behaviour.requests > 0
    got = [t.rewards["rbrlang-judge"].score for t in traces]
    assert got == pytest.approx(expected(safety, grader, samples), abs=1e-3)


def test_a_config_without_a_policy_is_refused_by_verifiers_validation():
    with pytest.raises(ValueError, match="needs `policy`"):
        vf.TaskConfig(judges=[{"id": "rbrlang-judge", "model": "m"}])
    with pytest.raises(ValueError, match="needs `model`"):
        vf.TaskConfig(judges=[{"id": "rbrlang-judge", "policy": str(SAFETY)}])
