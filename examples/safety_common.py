"""What grpo_safety.py and ppo_safety.py share: command-line flags, the
training prompts (conversation + category from a gold_train.jsonl-shaped file),
tiny stand-in models for CPU runs, and the grader on this process's device."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Sixteen short prompts that ship with the examples (ours, one or more per request
# category of the safety policy), so a fresh clone runs as is; --data or $RBR_DATA
# point at a larger set, e.g. the RBR paper's released gold_train.jsonl.
DEFAULT_DATA = Path(os.environ.get("RBR_DATA", Path(__file__).resolve().parent / "prompts.jsonl"))


def add_common_flags(parser: argparse.ArgumentParser, output_dir: str) -> argparse.ArgumentParser:
    parser.add_argument("--compiled", default=str(ROOT / "compiled/safety"),
                        help="a compiled policy folder (rbrc compile); default: the shipped safety policy")
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="JSON lines with `prompt` (messages) and `category` (or `response_type`); "
                             "default: $RBR_DATA or examples/prompts.jsonl")
    parser.add_argument("--policy", default=None,
                        help="the policy model to train (path or hub id); default: a tiny random Llama "
                             "with a chat template, built under OUTPUT_DIR/tiny-policy")
    parser.add_argument("--grader", default=None,
                        help="the grader model (path or hub id, e.g. Qwen/Qwen2.5-7B-Instruct); default: a "
                             "tiny random Llama built under OUTPUT_DIR/tiny-grader")
    parser.add_argument("--output-dir", default=output_dir,
                        help=f"where the trained policy goes (default {output_dir})")
    parser.add_argument("--steps", type=int, default=2, help="training steps (default 2)")
    parser.add_argument("--prompts", type=int, default=16,
                        help="use the N shortest conversations (quick CPU runs); 0: all (default 16)")
    parser.add_argument("--batch-size", type=int, default=2, help="completions per device per step (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="completion length limit (default 8)")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def load_prompts(path, limit: int = 0) -> list[dict]:
    """`[{"prompt": messages, "category": …, "response_type": …}]`, the `limit` shortest when limit > 0."""
    from rbrlang.data.records import conversation_of
    from rbrlang.errors import RbrError

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        sys.exit(f"error: cannot read {path}: {exc.strerror or exc}")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            rows.append({"prompt": conversation_of(record), "category": record.get("category"),
                         "response_type": record.get("response_type")})
        except (ValueError, RbrError) as exc:
            sys.exit(f"error: {path}:{number}: {exc}")
    if limit > 0:
        rows = sorted(rows, key=lambda r: len(json.dumps(r["prompt"])))[:limit]
    if not rows:
        sys.exit(f"error: {path}: no conversations")
    return rows


def model_paths(args) -> tuple[str, str]:
    """The policy and grader models, building tiny ones where none was named."""
    from rbrlang.runtime.tiny import build_tiny_grader

    out = Path(args.output_dir)
    policy = args.policy or _tiny(build_tiny_grader, out / "tiny-policy", seed=args.seed + 1)
    grader = args.grader or _tiny(build_tiny_grader, out / "tiny-grader", seed=args.seed)
    return policy, grader


def _tiny(build, path: Path, seed: int) -> str:
    from accelerate import PartialState

    # One process builds; the others (accelerate launch) wait and load it.
    state = PartialState()
    with state.main_process_first():
        if not (path / "config.json").is_file():
            build(path, seed=seed)
    return str(path)


def load_grader(path: str):
    """An HFGrader on this process's device (each process of a multi-GPU run grades on its own GPU)."""
    from accelerate import PartialState

    from rbrlang.runtime import HFGrader

    return HFGrader.from_pretrained(path, device=str(PartialState().device))


def use_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def train(build_trainer, args, metric: str) -> int:
    """Build the trainer (a mistake in the inputs is one line, exit 1), train,
    save, and print the mean RBR reward the trainer logged per step (`metric`)."""
    from rbrlang.errors import RbrError

    try:
        trainer = build_trainer(args)
    except RbrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    trainer.train()
    trainer.save_model(args.output_dir)
    # A step whose prompts the policy routes nowhere logs no RBR reward (None or NaN).
    values = [h[metric] for h in trainer.state.log_history if metric in h]
    shown = ", ".join("none routed" if v is None or v != v else f"{v:.4f}" for v in values) or "none logged"
    print(f"trained {trainer.state.global_step} steps; mean RBR reward per step: {shown}; "
          f"policy saved to {args.output_dir}")
    return 0
