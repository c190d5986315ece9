"""`rbrc tiny-grader DIR`: a tiny real grader model to try `rbrc grade` with.

It is a Llama-architecture causal LM with random weights and a byte-level BPE
tokenizer trained on the spot, saved with `save_pretrained`, so `rbrc grade
--grader DIR` loads it the way it loads a real model. Its answers are
meaningless (random weights); the formats, the cache and the speed path are
the real ones. Nothing is downloaded."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import EXIT_OK

MARKER = "rbrlang_tiny.json"  # written by build_tiny_grader: proof a folder is ours to replace


def register(sub) -> None:
    p = sub.add_parser("tiny-grader", help="write a tiny random-weight grader model to try `rbrc grade` with",
                       description=__doc__.split("\n\n", 1)[1].replace("\n", " "))
    p.add_argument("dir", metavar="DIR", help="the folder to write (missing, empty, or an earlier tiny grader)")
    p.add_argument("--seed", type=seed, default=0, help="the weights' random seed (default 0)")
    p.add_argument("--config", choices=("tiny", "small"), default="tiny",
                   help="tiny: 2 layers, width 64 (0.2M parameters); small: 4 layers, width 256 (8M)")
    p.set_defaults(run=cmd_tiny_grader)


# What torch.manual_seed takes; a seed past it was a ValueError deep in torch (exit 70).
SEEDS = (-2 ** 63, 2 ** 64 - 1)


def seed(text: str) -> int:
    """An argparse type: a whole number torch can seed with."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not SEEDS[0] <= value <= SEEDS[1]:
        raise argparse.ArgumentTypeError(f"{text} is out of range; a seed is a whole number from -2**63 to 2**64 - 1")
    return value


def cmd_tiny_grader(args) -> int:
    from ..files import check_output_folder, replace_folder, umask
    from .data import needs_grader_extra

    needs_grader_extra("rbrc tiny-grader")
    from ..runtime.tiny import build_tiny_grader

    from transformers.utils import logging

    logging.disable_progress_bar()
    out = check_output_folder(args.dir, "DIR", "an earlier tiny grader", lambda p: (p / MARKER).is_file())

    def fill(tmp: Path) -> None:
        build_tiny_grader(tmp, seed=args.seed, config=args.config)
        for path in tmp.rglob("*"):  # safetensors writes 0600; the folder is for sharing like any model
            if path.is_file():
                os.chmod(path, 0o666 & ~umask())

    replace_folder(out, fill)
    print(f"wrote a tiny grader ({args.config}, seed {args.seed}) → {args.dir}; try "
          f"`rbrc grade COMPILED --data IN.jsonl --grader {args.dir} -o OUT.jsonl`", file=sys.stderr)
    return EXIT_OK
