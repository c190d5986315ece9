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


def test_tool_using_completions_grade_the_final_reply(safety, grader):
    """trl 1.16's tool loop: assistant tool call, tool result, final assistant reply."""
    rows = gold_rows(2)
    func = reward_function(safety, grader)
    prompts, cats = [r["prompt"] for r in rows], [r["category"] for r in rows]
    replies = [r["completion"][0]["content"] for r in rows]
    with_tools = [[{"role": "assistant", "content": "",
                    "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"q": "x"}}}]},
                   {"role": "tool", "name": "search", "content": "a long tool result " * 20},
                   {"role": "assistant", "content": reply}] for reply in replies]
    got, _, _ = call_like_trl(func, prompts, with_tools, category=cats)
    plain, _, _ = call_like_trl(func, prompts, replies, category=cats)
    assert got.tolist() == pytest.approx(plain.tolist(), abs=1e-6)
    # A turn cut off after a tool result has no reply: graded as "".
    cut = [m[:2] for m in with_tools]
    empty, _, _ = call_like_trl(func, prompts, [""] * 2, category=cats)
    assert call_like_trl(func, prompts, cut, category=cats)[0].tolist() == pytest.approx(empty.tolist(), abs=1e-6)
    from rbrlang.errors import ConversationError

    with pytest.raises(ConversationError, match="completion 1: message 2 has role 'user'"):
        call_like_trl(func, prompts, [with_tools[0], cut[1] + [{"role": "user", "content": "hm"}]], category=cats)


def test_a_pickled_reward_function_carries_its_configuration_not_weights(tmp_path, safety, tiny_model_dir, grader):
    """As TRL's async GRPO does: pickled into a child process that sees no GPU; the
    child loads the grader itself, grades, and writes the grade cache it was given."""
    import subprocess
    import sys

    from tests.support.files import ROOT

    cache = tmp_path / "grades.sqlite"
    func = reward_function(safety, str(tiny_model_dir), device="auto", dtype="float32", cache=cache)
    assert func.reward.grader._grader is None  # nothing loaded by building it
    blob = pickle.dumps(func)
    weights = sum(f.stat().st_size for f in tiny_model_dir.glob("*.safetensors"))
    assert len(blob) < weights / 4, (len(blob), weights)
    rows = gold_rows(3)
    prompts, cats = [r["prompt"] for r in rows], [r["category"] for r in rows]
    texts = [r["completion"][0]["content"] for r in rows]
    (tmp_path / "func.pkl").write_bytes(blob)
    (tmp_path / "args.pkl").write_bytes(pickle.dumps((prompts, texts, cats)))
    child = ("import pickle, sys, json\n"
             f"func = pickle.loads(open({str(tmp_path / 'func.pkl')!r}, 'rb').read())\n"
             f"prompts, texts, cats = pickle.loads(open({str(tmp_path / 'args.pkl')!r}, 'rb').read())\n"
             "print(json.dumps(func(prompts=prompts, completions=texts, category=cats)))\n"
             "print(func.reward.grader.loaded.model.device)\n")
    import os

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    rewards, device = proc.stdout.strip().splitlines()[-2:]
    here, _, _ = call_like_trl(reward_function(safety, grader), prompts, texts, category=cats)
    assert json.loads(rewards) == pytest.approx(here.tolist(), abs=1e-5)
    assert device == "cpu" and cache.stat().st_size > 0
    # The parent, loading the same configuration, reads the child's grades from the cache.
    again = pickle.loads(blob)
    call_like_trl(again, prompts, texts, category=cats)
    stats = again.reward.grader.loaded.stats
    assert stats.cached > 0 and stats.graded == 0


def test_an_async_reward_function_for_a_served_grader(safety, tiny_model_dir, grader):
    """With trl >= 1.14 a served grader gives an async reward function, detected by
    TRL's own `is_async_callable` and awaited as `_calculate_rewards` awaits it; on
    trl 1.12 (which would not await it) the plain one."""
    import asyncio
    import inspect

    from rbrlang.integrations.trl import AsyncRBRRewardFunction, trl_awaits_async_callables

    from tests.support.completions_server import CompletionsServer

    rows = gold_rows(3)
    prompts, cats = [r["prompt"] for r in rows], [r["category"] for r in rows]
    texts = [r["completion"][0]["content"] for r in rows]
    want, _, _ = call_like_trl(reward_function(safety, grader), prompts, texts, category=cats)
    with CompletionsServer(grader.model, str(tiny_model_dir)) as server:
        func = reward_function(safety, str(tiny_model_dir), backend="openai", base_url=server.url)
        if not trl_awaits_async_callables():
            assert not isinstance(func, AsyncRBRRewardFunction) and not inspect.iscoroutinefunction(func)
            with pytest.raises(PolicyError, match="trl >= 1.14"):
                reward_function(safety, str(tiny_model_dir), backend="openai", base_url=server.url,
                                asynchronous=True)
            got, _, _ = call_like_trl(func, prompts, texts, category=cats)
            assert got.tolist() == pytest.approx(want.tolist(), abs=1e-3)
            return
        from trl.trainer.utils import is_async_callable

        assert isinstance(func, AsyncRBRRewardFunction) and is_async_callable(func)
        metrics = defaultdict(list)

        async def calculate():  # two awaited at once, as TRL gathers its async reward functions
            kwargs = dict(prompts=prompts, completions=texts, completion_ids=[[1]] * 3, category=cats,
                          trainer_state=None, log_extra=lambda c, v: None,
                          log_metric=lambda n, v: metrics[n].append(v))
            return await asyncio.gather(func(**kwargs), func(**kwargs))

        first, second = asyncio.run(calculate())
        assert first == second and first == pytest.approx(want.tolist(), abs=1e-3)
        assert metrics["rbr/routed"] == [1.0, 1.0] and server.behaviour.requests > 0
        copy = pickle.loads(pickle.dumps(func))  # as configuration: no HTTP client, no tokenizer
        assert copy.reward.grader._grader is None and isinstance(copy, AsyncRBRRewardFunction)


# --- the extras: `rbrlang[trl]` never changes the trl a user has ------------------------------

NEWEST_TRL = "1.16.0"  # the newest trl checked (its released wheel); CI installs the newest


def extra_requirements(name: str) -> list[str]:
    """An extra's requirements from pyproject.toml, its `rbrlang[...]` references expanded."""
    import re
    import tomllib

    from tests.support.files import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras, out, todo, seen = project["optional-dependencies"], list(project["dependencies"]), [name], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in extras[extra]:
            own = re.fullmatch(r"rbrlang\[([\w,-]+)\]", req)
            if own:
                todo += own.group(1).split(",")
            else:
                out.append(req)
    return out


def dry_run(tmp_path, requirements: list[str]):
    """`pip install --dry-run --report` of `requirements` beside what is installed, from no index:
    (exit status, the report's installs as {name: version}, pip's stderr)."""
    import json
    import subprocess
    import sys

    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
                           "--report", str(report), *requirements], capture_output=True, text=True, timeout=300)
    installs = {}
    if proc.returncode == 0:
        installs = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                    for i in json.loads(report.read_text())["install"]}
    return proc.returncode, installs, proc.stderr


def test_the_trl_extra_takes_every_trl_from_1_12_to_the_newest():
    from packaging.requirements import Requirement

    def trl_spec(extra):
        return next(Requirement(r).specifier for r in extra_requirements(extra) if Requirement(r).name == "trl")

    for extra in ("trl", "test"):
        assert all(trl_spec(extra).contains(v) for v in ("1.12.0", "1.14.0", NEWEST_TRL, "2.0.0")), extra
        assert not trl_spec(extra).contains("1.11.0")
    # PPO alone is pinned: its trainer is gone from trl 1.13.
    assert trl_spec("trl-ppo").contains("1.12.0") and not trl_spec("trl-ppo").contains("1.13.0")


def test_installing_the_trl_extra_changes_nothing_of_the_installed_trl(tmp_path):
    """pip's own resolver, offline, beside the trl installed here (the newest, in CI)."""
    import importlib.metadata

    from packaging.version import Version

    pytest.importorskip("trl")
    installed = importlib.metadata.version("trl")
    for extra in ("trl", "test"):
        code, installs, err = dry_run(tmp_path, extra_requirements(extra))
        assert code == 0, f"rbrlang[{extra}] beside trl {installed}: {err}"
        assert "trl" not in installs, f"rbrlang[{extra}] would change trl {installed} to {installs['trl']}"
    code, installs, err = dry_run(tmp_path, extra_requirements("trl-ppo"))
    if Version(installed) >= Version("1.13"):  # the PPO extra alone asks for trl 1.12 (no index here: it fails)
        assert code != 0 and "trl" in err
    else:
        assert code == 0 and "trl" not in installs
