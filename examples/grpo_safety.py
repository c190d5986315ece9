"""Train a policy with TRL's GRPO, rewarded by the compiled safety policy.

On a CPU, with tiny random models built on the fly (about a minute):

    python examples/grpo_safety.py --steps 2

On GPUs, with real models (one grader per process, on its GPU):

    accelerate launch examples/grpo_safety.py --policy Qwen/Qwen2.5-0.5B-Instruct \\
        --grader Qwen/Qwen2.5-7B-Instruct --steps 200 --prompts 0 --batch-size 8 \\
        --num-generations 8 --max-new-tokens 256 --learning-rate 1e-6 --output-dir runs/grpo_safety

Each dataset row is a conversation (`prompt`, as messages) and its request
`category`; the RBR reward routes the category to a response type, grades the
completion's propositions and scores it. A category with no route gets no RBR
reward (None), so another reward function would decide there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from safety_common import add_common_flags, load_grader, load_prompts, model_paths, train, use_bf16  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = add_common_flags(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "runs/grpo_safety")
    parser.add_argument("--num-generations", type=int, default=2,
                        help="completions per prompt (GRPO compares them; at least 2, dividing --batch-size)")
    return parser.parse_args(argv)


def build_trainer(args: argparse.Namespace):
    """The GRPOTrainer, ready to `train()`; its reward function is `trainer.reward_funcs[0]`."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rbrlang.integrations.trl import reward_function
    from rbrlang.policy import load_policy

    rows = load_prompts(args.data, args.prompts)
    policy_path, grader_path = model_paths(args)
    compiled = load_policy(args.compiled)
    # Route by category, as a trainer knows it; a response type column would win over it.
    dataset = Dataset.from_list([{"prompt": r["prompt"], "category": r["category"]} for r in rows])
    config = GRPOConfig(
        output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations, max_completion_length=args.max_new_tokens,
        learning_rate=args.learning_rate, seed=args.seed, logging_steps=1, report_to="none",
        save_strategy="no", bf16=use_bf16(), log_completions=False)
    return GRPOTrainer(model=policy_path, reward_funcs=[reward_function(compiled, load_grader(grader_path))],
                       args=config, train_dataset=dataset)


def main(argv=None) -> int:
    return train(build_trainer, parse_args(argv), "rewards/rbr/mean")


if __name__ == "__main__":
    sys.exit(main())
