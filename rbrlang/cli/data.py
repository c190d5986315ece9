"""rbrc commands over data files: classify and grade."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import diagnostics as dg
from .output import lines


def register(sub) -> None:
    p = sub.add_parser("classify", help="classify labelled completions (JSON lines) with a compiled policy")
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--labels", metavar="FILE.jsonl", required=True)
    p.add_argument("--keep-going", action="store_true",
                   help="report bad lines and go on (exit status 1 if any line was bad)")
    p.set_defaults(run=cmd_classify)

    p = sub.add_parser("grade", help="grade conversations and completions (JSON lines) with a grader model")
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--data", metavar="IN.jsonl", required=True)
    p.add_argument("--grader", metavar="MODEL", required=True, help="a local model folder or hub id")
    p.add_argument("-o", "--output", metavar="OUT.jsonl", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--token-budget", type=int, default=16384, help="padded tokens per batch")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--cache", metavar="PATH", default=".rbrlang/grades.sqlite", help="the grade cache file")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the grade cache")
    p.add_argument("--no-chat-template", action="store_true", help="send the prompt as plain text")
    p.add_argument("--truncate", choices=("error", "oldest-turns"), default="error",
                   help="what to do when a prompt is longer than the grader's context")
    p.add_argument("--keep-going", action="store_true", help="report bad lines and grade the rest")
    p.set_defaults(run=cmd_grade)


def _open_inputs(command: str, compiled: str, data: str):
    """The compiled policy and the data file, or None after saying what is missing."""
    from ..policy import load_policy

    path = Path(data)
    if not path.is_file():
        print(f"rbrc {command}: error: {path}: no such file", file=sys.stderr)
        return None
    return load_policy(compiled), path



def cmd_classify(args) -> int:
    from ..data.classify import classify_file

    opened = _open_inputs("classify", args.compiled, args.labels)
    if opened is None:
        return 1
    policy, path = opened
    bad = 0
    sources = {}
    for item in classify_file(policy, path):
        if isinstance(item, dg.Diagnostic):
            if not sources:
                sources = {str(path): path.read_text(encoding="utf-8", errors="replace")}
            print(dg.render(item, sources[str(path)]), file=sys.stderr)
            bad += 1
            if not args.keep_going:
                return 1
            continue
        print(json.dumps(item.to_json()))
    if bad:
        print(f"{lines(bad, 'bad')} skipped", file=sys.stderr)
    return 1 if bad else 0


def cmd_grade(args) -> int:
    from ..data.grade import grade_file
    from ..runtime import GraderError, HFGrader

    opened = _open_inputs("grade", args.compiled, args.data)
    if opened is None:
        return 1
    policy, data = opened
    try:
        grader = HFGrader.from_pretrained(
            args.grader, device=args.device, dtype=args.dtype, token_budget=args.token_budget,
            max_batch=args.max_batch, cache=None if args.no_cache else args.cache,
            use_chat_template=False if args.no_chat_template else None,
            truncate=args.truncate.replace("-", "_"))
    except (OSError, ValueError) as exc:
        print(f"rbrc grade: error: cannot load grader `{args.grader}`: {exc}", file=sys.stderr)
        return 1
    try:
        written, bad = grade_file(policy, grader, data, Path(args.output), keep_going=args.keep_going)
    except GraderError as exc:
        print(f"rbrc grade: error: {exc}", file=sys.stderr)
        return 1
    text = data.read_text(encoding="utf-8", errors="replace") if bad else ""
    for d in bad:
        print(dg.render(d, text), file=sys.stderr)
    summary = f"graded {lines(written)} → {args.output}"
    if bad:
        summary += f"; {lines(len(bad), 'bad')} skipped"
    print(summary, file=sys.stderr)
    return 1 if bad else 0
