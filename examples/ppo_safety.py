"""Train a policy with TRL's PPO (trl 1.12, `trl.experimental.ppo`), rewarded by
the compiled safety policy through `RBRRewardModel`.

On a CPU, with tiny random models built on the fly (about a minute):

    python examples/ppo_safety.py --steps 2

On GPUs, with real models (one grader per process, on its GPU):

    accelerate launch examples/ppo_safety.py --policy Qwen/Qwen2.5-0.5B-Instruct \\
        --grader Qwen/Qwen2.5-7B-Instruct --steps 200 --prompts 0 --batch-size 8 \\
        --max-new-tokens 256 --learning-rate 1e-6 --output-dir runs/ppo_safety

PPO hands its reward model token ids only. The reward model holds a
`PromptTable` built from the same conversations the training prompts were
tokenized from, so it grades each completion against the real conversation
(messages) under the row's category. The value model starts from the policy
model with a fresh one-output head, as TRL's own PPO example does; pass
--value-model for another.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from safety_common import add_common_flags, load_grader, load_prompts, model_paths, train, use_bf16  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = add_common_flags(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "runs/ppo_safety")
    parser.add_argument("--value-model", default=None, help="the value model's start (default: the policy model)")
    return parser.parse_args(argv)


def build_trainer(args: argparse.Namespace):
    """The PPOTrainer, ready to `train()`; its reward model is `trainer.reward_model`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rbrlang.integrations.trl_ppo import PromptTable, RBRRewardModel
    from rbrlang.rewards import RBRReward

    rows = load_prompts(args.data, args.prompts)
    policy_path, grader_path = model_paths(args)
    tokenizer = AutoTokenizer.from_pretrained(policy_path, padding_side="left")  # PPO generates after the prompt
    added = tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id
    if added:  # PPO drops every pad-valued token, so pad must not be EOS
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})

    table = PromptTable(tokenizer, [r["prompt"] for r in rows], categories=[r["category"] for r in rows])
    dataset = Dataset.from_dict({"input_ids": table.input_ids})
    reward_model = RBRRewardModel(RBRReward(args.compiled, load_grader(grader_path)), tokenizer, table)

    policy = AutoModelForCausalLM.from_pretrained(policy_path)
    ref_policy = AutoModelForCausalLM.from_pretrained(policy_path)
    value_model = AutoModelForSequenceClassification.from_pretrained(args.value_model or policy_path, num_labels=1)
    for model in (policy, ref_policy, value_model):
        if added:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = PPOConfig(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, num_mini_batches=1,
        local_rollout_forward_batch_size=args.batch_size, total_episodes=args.steps * args.batch_size * world,
        response_length=args.max_new_tokens, stop_token="eos", missing_eos_penalty=None, num_ppo_epochs=1,
        learning_rate=args.learning_rate, seed=args.seed, logging_steps=1, report_to="none", save_strategy="no",
        num_sample_generations=0, bf16=use_bf16())
    return PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=dataset)


def main(argv=None) -> int:
    return train(build_trainer, parse_args(argv), "objective/scores")


if __name__ == "__main__":
    sys.exit(main())
