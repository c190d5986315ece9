"""End to end with TRL on CPU: examples/grpo_safety.py (any trl from 1.12 to the
newest; CI runs the newest) and examples/ppo_safety.py (trl 1.12 only, the last
with `trl.experimental.ppo`; skipped on a newer trl) build their trainers with tiny real models (a random
Llama policy, the tiny grader) and the compiled safety policy; a few steps run.
What the trainer received is recorded where the trainer takes it (GRPO's
`_calculate_rewards`, PPO's `get_reward`), and every reward must equal the one
recomputed independently, from the decoded texts and the dataset's
conversations, with a separate grader instance, `policy.features` and
`policy.reward`. The policy's weights must have changed."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from tests.support.files import ROOT, SHARED, gold_rows
from tests.support.rewards import expected_rewards

pytest.importorskip("trl", reason="trl (pip install 'rbrlang[trl]') is not installed")


def has_trl_ppo() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl.experimental.ppo") is not None


pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")]


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    from rbrlang.runtime.tiny import build_tiny_grader

    return build_tiny_grader(tmp_path_factory.mktemp("policy") / "policy", seed=1)


def flags(tmp_path, policy_dir, grader_dir, *extra):
    return ["--output-dir", str(tmp_path / "run"), "--policy", str(policy_dir), "--grader", str(grader_dir),
            "--data", str(SHARED / "gold_train.jsonl"), "--steps", "2", "--prompts", "4", "--batch-size", "2",
            "--max-new-tokens", "6", "--learning-rate", "1e-3", *extra]


def snapshot(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(model, before: dict) -> list[str]:
    return [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]


def test_grpo_rewards_are_the_policy_reward(tmp_path, tiny_policy_dir, tiny_model_dir, safety, grader):
    grpo = example("grpo_safety")
    trainer = grpo.build_trainer(grpo.parse_args(flags(tmp_path, tiny_policy_dir, tiny_model_dir,
                                                       "--num-generations", "2")))
    calls = []
    real = trainer._calculate_rewards

    def recording(inputs, prompts, completions, completion_ids_list):
        got = real(inputs, prompts, completions, completion_ids_list)
        calls.append(([x["category"] for x in inputs], prompts, completions, got.detach().clone()))
        return got

    trainer._calculate_rewards = recording
    before = snapshot(trainer.model)
    trainer.train()

    assert len(calls) == 2
    logged = [h["rewards/rbr/mean"] for h in trainer.state.log_history if "rewards/rbr/mean" in h]
    for (categories, prompts, completions, got), mean in zip(calls, logged):
        assert got.shape == (2, 1)
        texts = [c[0]["content"] for c in completions]  # conversational: one assistant message each
        assert all(c[0]["role"] == "assistant" for c in completions)
        want = expected_rewards(safety, grader, prompts, texts, categories)
        assert got[:, 0].tolist() == pytest.approx(want, abs=1e-5)
        assert mean == pytest.approx(sum(want) / len(want), abs=1e-5)
    assert changed(trainer.model, before), "no policy weight changed"


@pytest.mark.skipif(not has_trl_ppo(), reason="trl.experimental.ppo is in trl 1.12 only (pip install "
                                               "'rbrlang[trl-ppo]'); GRPO above runs on any trl")
def test_ppo_rewards_are_the_policy_reward(tmp_path, tiny_policy_dir, tiny_model_dir, safety, grader, monkeypatch):
    from transformers import AutoTokenizer
    from trl.experimental.ppo import ppo_trainer

    ppo = example("ppo_safety")
    trainer = ppo.build_trainer(ppo.parse_args(flags(tmp_path, tiny_policy_dir, tiny_model_dir)))
    calls = []
    real = ppo_trainer.get_reward

    def recording(model, query_responses, pad_token_id, context_length):
        out = real(model, query_responses, pad_token_id, context_length)
        if model is trainer.reward_model:
            calls.append((query_responses.detach().clone(), context_length, out[1].detach().clone()))
        return out

    monkeypatch.setattr(ppo_trainer, "get_reward", recording)
    before = snapshot(trainer.policy_model)
    trainer.train()

    # The test's own way back from token ids to dataset rows: each row's prompt tokens.
    tok = AutoTokenizer.from_pretrained(str(tiny_policy_dir))
    by_ids = {}
    for row in gold_rows():
        text = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        by_ids.setdefault(tuple(tok(text, add_special_tokens=False)["input_ids"]), []).append(row)
    pad = tok.pad_token_id

    assert len(calls) == 2
    logged = [h["objective/scores"] for h in trainer.state.log_history if "objective/scores" in h]
    for (qr, width, got), mean in zip(calls, logged):
        conversations, texts, categories = [], [], []
        for seq in qr.tolist():
            prompt = tuple(t for t in seq[:width] if t != pad)
            matches = by_ids[prompt]
            assert len({m["category"] for m in matches}) == 1
            conversations.append(matches[0]["prompt"])
            categories.append(matches[0]["category"])
            texts.append(tok.decode([t for t in seq[width:] if t != pad], skip_special_tokens=True))
        want = expected_rewards(safety, grader, conversations, texts, categories)
        assert got.tolist() == pytest.approx(want, abs=1e-5)
        assert mean == pytest.approx(sum(want) / len(want), abs=1e-5)
    assert changed(trainer.policy_model, before), "no policy weight changed"


def test_examples_say_what_is_wrong_with_the_data(tmp_path, capsys):
    names = ("grpo_safety", "ppo_safety") if has_trl_ppo() else ("grpo_safety",)  # PPO's trainer: trl 1.12
    for name in names:
        module = example(name)
        with pytest.raises(SystemExit) as exc:
            module.main(["--data", str(tmp_path / "missing.jsonl"), "--output-dir", str(tmp_path / name)])
        assert str(exc.value).startswith(f"error: cannot read {tmp_path / 'missing.jsonl'}")
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": [{"role": "user", "content": "hi"}], "category": "C-R"}\n{"prompt": 3}\n')
        with pytest.raises(SystemExit) as exc:
            module.main(["--data", str(bad), "--output-dir", str(tmp_path / name)])
        assert str(exc.value).startswith(f"error: {bad}:2: ")
    assert not any((tmp_path / name).exists() for name in names)
    assert "examples" not in sys.modules  # the examples are scripts, not a package


def test_documented_commands_parse():
    """Every example command in examples/README.md and the scripts' docstrings uses real flags."""
    import re
    import shlex

    texts = [(ROOT / "examples/README.md").read_text()]
    texts += [(ROOT / f"examples/{n}.py").read_text().replace("\\\\\n", "\\\n") for n in ("grpo_safety", "ppo_safety")]
    commands = []
    for text in texts:
        joined = re.sub(r"\\\n\s*", " ", text)
        commands += re.findall(r"^\s+((?:python|accelerate launch) examples/\w+\.py.*)$", joined, re.M)
    assert len(commands) == 8
    for command in commands:
        words = shlex.split(command)
        script = next(w for w in words if w.startswith("examples/"))
        module = example(script[len("examples/"):-len(".py")])
        args = module.parse_args(words[words.index(script) + 1:])
        assert args.steps > 0 and args.output_dir.startswith("runs/")
