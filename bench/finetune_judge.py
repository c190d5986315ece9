"""Fine-tune the small judge on the gold set's fit half with TRL, and save it as a
model folder `--grader DIR` takes (a separate lever from the prompt: issue 19).

    nice -n 19 python bench/finetune_judge.py --n 30 --seed 19 --out ~/.cache/rbrlang-gold/smollm2-sft
    nice -n 19 python bench/gold_real.py --grader ~/.cache/rbrlang-gold/smollm2-sft --name sft_n30 --n 30

The examples are exactly what the grader reads: for every gold item of the fit
half (the same seeded split by prompt as `rbrc eval` and bench/gold_real.py, so
the score half is never trained on) and every graded proposition it has a label
for, the prompt's ids as `PromptEncoder` encodes them (the policy's chat turns,
the answer cue included) and one answer token, " Yes" or " No". TRL's
`SFTTrainer` takes them pre-tokenized with a completion mask, so the loss is the
cross-entropy of that one token: the next-token distribution the grader turns
into P(yes). (Given prompt/completion strings instead, TRL would tokenize the two
apart and append an end-of-sequence token the grader never reads.)

On a CPU the whole prompt (≈500 tokens) is forwarded for every example, so the
cost is the forward: by default only the top `--train-layers` decoder layers and
the final norm are trained (the embeddings are tied to the output head and stay
frozen), which saves the backward through the rest, and `--max-examples` caps
the examples (every "yes" first, then a seeded sample of the "no"s).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gold_real  # noqa: E402  (the subset and the defaults: one home)


def examples(policy, grader, gold_path: Path, seed: int):
    """[(input_ids, answer)] for the fit half of the gold file, and the split."""
    import numpy as np

    from rbrlang.data.records import read_line
    from rbrlang.evaluate.inputs import read_gold
    from rbrlang.evaluate.metrics import split_by_prompt

    gold = read_gold(policy, gold_path)
    split = split_by_prompt(gold.prompt_keys, seed, str(gold_path))
    rows = [json.loads(line) for line in gold_path.read_text(encoding="utf-8").splitlines()]
    out = []
    for i in np.asarray(split.fit):
        _, conversation, completion = read_line(policy, rows[i])
        for name, label in rows[i]["propositions"].items():
            if not policy.proposition(name).graded:
                continue
            text = grader.encoder.text(policy.render(name, conversation, completion), policy)
            out.append((list(grader.encoder.ids([text])[0]), bool(label), int(i), name))
    return out, split


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="compiled/safety")
    ap.add_argument("--grader", default=str(gold_real.MODEL), help="the judge to start from (a model folder)")
    ap.add_argument("--gold", default=str(gold_real.GOLD))
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--out", required=True, help="the tuned model's folder (for --grader DIR)")
    ap.add_argument("--train-layers", type=int, default=6, help="top decoder layers trained (30: all of them)")
    ap.add_argument("--max-examples", type=int, default=160)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rbrlang.runtime import load_grader

    policy = gold_real.load(args.policy)
    grader = load_grader(args.grader, device="cpu", dtype="float32")
    model, tokenizer = grader.model, grader.tokenizer
    gold_path = gold_real.subset(Path(args.gold), args.n, args.seed, Path(gold_real.OUT))
    found, split = examples(policy, grader, gold_path, args.seed)
    # The answer token after the cue: the spelling with a leading space (the policy lists it).
    answer = {True: " Yes", False: " No"}
    for spelling in answer.values():
        assert spelling in (policy.yes + policy.no), f"{spelling!r} is not one of the policy's answer spellings"
    token = {k: tokenizer(v, add_special_tokens=False)["input_ids"] for k, v in answer.items()}
    assert all(len(t) == 1 for t in token.values()), token
    yes = [e for e in found if e[1]]
    no = [e for e in found if not e[1]]
    random.Random(args.seed).shuffle(no)
    chosen = (yes + no)[: args.max_examples]
    random.Random(args.seed + 1).shuffle(chosen)
    data = Dataset.from_list([{"input_ids": ids + token[label], "completion_mask": [0] * len(ids) + [1]}
                              for ids, label, _, _ in chosen])

    for p in model.parameters():
        p.requires_grad_(False)
    layers = model.model.layers
    trained = list(layers[len(layers) - args.train_layers:]) + [model.model.norm]
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)

    config = SFTConfig(output_dir=str(Path(args.out).with_name(Path(args.out).name + ".trainer")),
                       per_device_train_batch_size=1, gradient_accumulation_steps=4,
                       num_train_epochs=args.epochs, learning_rate=args.lr, lr_scheduler_type="constant",
                       logging_steps=5, save_strategy="no", report_to="none", use_cpu=True,
                       completion_only_loss=True, max_length=None, dataset_num_proc=None, seed=args.seed,
                       bf16=False, fp16=False)
    model.train()
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    start, cpu0 = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    model.eval()
    out = Path(args.out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "from": args.grader, "policy": args.policy, "gold_subset": str(gold_path), "seed": args.seed,
        "fit_items": len(split.fit), "score_items": len(split.report), "examples": len(chosen),
        "examples_yes": sum(1 for e in chosen if e[1]), "available": len(found),
        "tokens": sum(len(e[0]) + 1 for e in chosen), "train_layers": args.train_layers,
        "trained_parameters": n_trained, "epochs": args.epochs, "lr": args.lr,
        "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1),
        "load_average_end": os.getloadavg()[0], "log": trainer.state.log_history,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    (out / "finetune.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in info.items() if k != "log"}, indent=1))


if __name__ == "__main__":
    main()
