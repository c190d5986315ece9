"""The PPO reward model, called through trl 1.12's own `get_reward` (the function
PPOTrainer scores rollouts with), on token ids shaped as the trainer shapes them:
left-padded prompts of one width, then responses cut after EOS and right-padded.
Expected rewards are recomputed from the conversations and texts with
`grader.grade` + `policy.features` + `policy.reward`."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.support.files import ROOT, SHARED, gold_rows
from tests.support.policies import copy_safety
from tests.support.rewards import expected_rewards

pytest.importorskip("trl.experimental.ppo", reason="trl 1.12 (pip install 'rbrlang[trl-ppo]') is not installed")

from transformers import AutoTokenizer  # noqa: E402
from trl.experimental.utils import get_reward  # noqa: E402

from rbrlang.errors import ConversationError, PolicyError  # noqa: E402
from rbrlang.integrations.trl_ppo import PromptTable, RBRRewardModel, trl_ppo_problem  # noqa: E402
from rbrlang.policy import load_policy  # noqa: E402
from rbrlang.rewards import RBRReward  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    # The tiny models share one kind of tokenizer: a chat template, <pad> apart from </s>.
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def rows():
    """Three short conversations judged under three different response types."""
    picked, seen = [], set()
    for row in gold_rows():
        if row["category"] in ("C-R", "SH-R2", "None") and row["category"] not in seen:
            seen.add(row["category"])
            picked.append(row)
    return picked


def rollout(tokenizer, prompts, responses):
    """(query_responses, context_length) as PPOTrainer builds them: prompts left-padded
    to one width, each response `text + EOS` right-padded (EOS-less where text is None)."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    width = max(map(len, prompts))
    resp = [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in responses]
    rwidth = max(map(len, resp)) + 2
    rows = [[pad] * (width - len(p)) + list(p) + r + [pad] * (rwidth - len(r)) for p, r in zip(prompts, resp)]
    return torch.tensor(rows), width


def test_get_reward_reads_the_rbr_reward_at_the_last_token(safety, grader, tokenizer, rows):
    table = PromptTable(tokenizer, [r["prompt"] for r in rows], categories=[r["category"] for r in rows])
    model = RBRRewardModel(RBRReward(safety, grader), tokenizer, table)
    assert len(table) == 3 and all(ids[0] == tokenizer.bos_token_id for ids in table.input_ids)
    # The second response holds the chat template's generation prompt: the split must not move.
    texts = ["I'm sorry, but I can't help with that.", "Sure.<|assistant|>\nHere is more.", ""]
    qr, width = rollout(tokenizer, table.input_ids, texts)
    logits, scores, lengths = get_reward(model, qr, tokenizer.pad_token_id, width)

    seen = [tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
            for t in texts]
    want = expected_rewards(safety, grader, [r["prompt"] for r in rows], seen, [r["category"] for r in rows])
    assert scores.dtype == torch.float32 and scores.tolist() == pytest.approx(want, abs=1e-5)
    assert logits.shape == (*qr.shape, 1)
    assert lengths.tolist() == [width + len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    batch = model.last_batch
    assert batch.response_types == [safety.route(r["category"]) for r in rows]
    assert len(set(batch.response_types)) == 3
    assert all(abs(sum(cp.values()) - 1) < 1e-6 for cp in batch.class_probabilities)
    # A standalone call gives the same [B, T, 1] values.
    assert torch.equal(model(qr, qr != tokenizer.pad_token_id), logits)


def test_a_prompt_missing_from_the_table_is_split_with_its_batch(safety, grader, tokenizer, rows):
    table = PromptTable(tokenizer, [r["prompt"] for r in rows[:2]], categories=[r["category"] for r in rows[:2]])
    model = RBRRewardModel(RBRReward(safety, grader), tokenizer, table, default_category="C-R")
    from rbrlang.integrations.trl_ppo import encode_prompt

    unknown = encode_prompt(tokenizer, rows[2]["prompt"])
    qr, width = rollout(tokenizer, [table.input_ids[0], unknown], ["No.", "Yes, gladly."])
    _, scores, _ = get_reward(model, qr, tokenizer.pad_token_id, width)
    as_text = [{"role": "user", "content": tokenizer.decode(unknown, skip_special_tokens=True)}]
    want = expected_rewards(safety, grader, [rows[0]["prompt"], as_text], ["No.", "Yes, gladly."],
                            [rows[0]["category"], "C-R"])
    assert scores.tolist() == pytest.approx(want, abs=1e-5)
    assert model.last_batch.response_types == [safety.route(rows[0]["category"]), "hard_refuse"]


def test_without_a_table_prompts_end_at_the_generation_prompt(safety, grader, tokenizer, rows):
    model = RBRRewardModel(RBRReward(safety, grader), tokenizer, default_category="SH-R2")
    from rbrlang.integrations.trl_ppo import encode_prompt

    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in rows[:2]]
    texts = ["Take care.<|assistant|>\nReally.", "Okay."]
    qr, width = rollout(tokenizer, prompts, texts)
    _, scores, _ = get_reward(model, qr, tokenizer.pad_token_id, width)
    convs = [[{"role": "user", "content": tokenizer.decode(p, skip_special_tokens=True)}] for p in prompts]
    want = expected_rewards(safety, grader, convs, ["Take care.\nReally.", "Okay."], ["SH-R2"] * 2)
    assert scores.tolist() == pytest.approx(want, abs=1e-5)


def test_unrouted_prompts_get_the_unrouted_reward(tmp_path, tokenizer, rows):
    folder = copy_safety(tmp_path / "safety", lambda doc: doc.update(default_route=None))
    # No grader: nothing is routed, so nothing may be graded.
    table = PromptTable(tokenizer, [r["prompt"] for r in rows[:2]], categories=["nowhere", None])
    model = RBRRewardModel(RBRReward(load_policy(folder)), tokenizer, table, unrouted_reward=-1.5)
    qr, width = rollout(tokenizer, table.input_ids, ["a", "b"])
    _, scores, _ = get_reward(model, qr, tokenizer.pad_token_id, width)
    assert scores.tolist() == [-1.5, -1.5]
    assert model.last_batch.response_types == [None, None]


def test_prompt_table_refuses_what_it_cannot_tell_apart(tokenizer, rows):
    conv = rows[0]["prompt"]
    with pytest.raises(PolicyError, match="conversations 0 and 1 give the same prompt tokens"):
        PromptTable(tokenizer, [conv, conv], categories=["C-R", "C-C"])
    assert len(PromptTable(tokenizer, [conv, conv], categories=["C-R", "C-R"])) == 1
    with pytest.raises(ConversationError, match="conversation 1"):
        PromptTable(tokenizer, [conv, [{"role": "user"}]])
    with pytest.raises(PolicyError, match="categories has 1 entries for 2"):
        PromptTable(tokenizer, [conv, conv], categories=["C-R"])


def test_the_import_names_the_alternatives_without_trl_ppo(tmp_path):
    assert trl_ppo_problem("1.12.0", True) is None
    message = trl_ppo_problem(None, False)
    assert "trl is not installed" in message
    for name in ("trl 1.12", "GRPO", "RLOO", "OpenRLHF", "veRL", "rbrlang[trl-ppo]"):
        assert name in message
    # A trl without trl.experimental.ppo (as 1.13 is), found first on the path.
    (tmp_path / "trl").mkdir()
    (tmp_path / "trl" / "__init__.py").write_text("")
    (tmp_path / "trl-1.13.0.dist-info").mkdir()
    (tmp_path / "trl-1.13.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: trl\nVersion: 1.13.0\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""\
        try:
            import rbrlang.integrations.trl_ppo
        except ImportError as exc:
            print(exc)
        """)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "trl 1.13.0 is installed and has no trl.experimental.ppo" in proc.stdout
    assert "GRPO or RLOO" in proc.stdout and "OpenRLHF" in proc.stdout and "veRL" in proc.stdout
