"""rbrc commands over data files: classify and grade.

Both read JSON lines (formats in docs/COMMANDS.md); a bad line is a located
diagnostic, a path that cannot be used a one-line `PathError`. `grade` checks
everything it can (the policy, every input line, the output path, the cache)
before it loads the grader model, so a mistake costs seconds, not a run."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .. import diagnostics as dg
from ..errors import EXIT_ERRORS, EXIT_OK, GraderError, PathError, RbrError
from .output import BadLines, first_line, lines

GRADE_EPILOG = """\
input (--data), one JSON object per line:
  {"prompt": [{"role": "user", "content": "…"}], "completion": "…", "category": "C-R"}
  ("completion" may also be a list of assistant messages; "response_type" may
  name the response type instead of "category")
output (-o), one JSON object per graded line:
  {"line": 1, "response_type": "…", "propositions": {name: P(yes)},
   "answer_mass": {name: mass}, "features": {…}, "classes": {…}, "schema_hash": "…"}
grade cache: --cache PATH, else $RBRLANG_CACHE, else $XDG_CACHE_HOME/rbrlang/grades.sqlite,
  else ~/.cache/rbrlang/grades.sqlite; --no-cache disables it.
try it without a real model: rbrc tiny-grader DIR, then --grader DIR.
"""

CLASSIFY_EPILOG = """\
input (--labels), one JSON object per line:
  {"response_type": "hard_refuse", "propositions": {"apology": true, "refuses": 0.8, …}}
  ("category" may replace "response_type"; labels are booleans or probabilities)
output (stdout), one JSON object per line:
  {"class": "ideal", "classes": {"ideal": 1.0, …}, "response_type": "hard_refuse", "line": 1}
"""


def register(sub) -> None:
    import argparse

    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("classify", help="classify labelled completions (JSON lines) with a compiled policy",
                       epilog=CLASSIFY_EPILOG, formatter_class=raw)
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--labels", metavar="FILE.jsonl", required=True)
    p.add_argument("--keep-going", action="store_true",
                   help="report bad lines and go on (exit status 1 if any line was bad)")
    p.set_defaults(run=cmd_classify)

    p = sub.add_parser("grade", help="grade conversations and completions (JSON lines) with a grader model",
                       epilog=GRADE_EPILOG, formatter_class=raw)
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--data", metavar="IN.jsonl", required=True)
    p.add_argument("--grader", metavar="MODEL", required=True, help="a local model folder or hub id")
    p.add_argument("--backend", choices=("hf", "vllm", "openai"), default="hf",
                   help="what runs the grader: transformers here (hf), vLLM's engine here (vllm), or an "
                        "OpenAI-compatible server at --base-url serving MODEL (openai)")
    p.add_argument("--base-url", metavar="URL", help="the server for --backend openai, e.g. http://HOST:8000/v1")
    p.add_argument("-o", "--output", metavar="OUT.jsonl", required=True,
                   help="written when grading ends; replaces only an empty file or an earlier grade output")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--token-budget", type=int, default=16384, help="padded tokens per batch")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--cache", metavar="PATH",
                   help="the grade cache file (default: $RBRLANG_CACHE, else $XDG_CACHE_HOME/rbrlang/"
                        "grades.sqlite, else ~/.cache/rbrlang/grades.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the grade cache")
    p.add_argument("--no-chat-template", action="store_true", help="send the prompt as plain text")
    p.add_argument("--truncate", choices=("error", "oldest-turns"), default="error",
                   help="what to do when a prompt is longer than the grader's context")
    p.add_argument("--keep-going", action="store_true",
                   help="report bad lines and grade the rest (exit status 1 if any line was bad)")
    p.set_defaults(run=cmd_grade)


def open_policy(compiled: str):
    """A compiled policy folder (or its policy.json); a `.rbr` or a missing folder is a `PolicyError`."""
    from ..policy import load_policy

    return load_policy(compiled)


def input_file(option: str, name: str) -> Path:
    """A JSONL input that exists and is a file (read errors come from `read_jsonl`)."""
    path = Path(name)
    if path.is_dir():
        raise PathError(name, "is a folder", f"{option} takes a JSON-lines file (one JSON object per line)")
    if not path.exists():
        raise PathError(name, "no such file", f"check the path given to {option}")
    return path


def model_path(option: str, name: str, what: str) -> None:
    """A model argument that is plainly a local path must be a folder; a hub id is left to transformers."""
    path = Path(name).expanduser()
    local = name.startswith(("/", "./", "../", "~")) or path.exists()
    if local and not path.exists():
        raise PathError(name, f"cannot load {what}: no such folder",
                        f"{option} takes a model folder (config.json, tokenizer files, weights) or a hub id")
    if path.exists() and not path.is_dir():
        raise PathError(name, f"cannot load {what}: it is a file, not a model folder",
                        f"{option} takes a model folder (config.json, tokenizer files, weights) or a hub id")


def needs_grader_extra(what: str) -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise RbrError(f"{what} needs torch and transformers ({exc.name} is missing): "
                       "pip install 'rbrlang[grader]'") from None


def cmd_classify(args) -> int:
    from ..data.classify import classify_file

    policy = open_policy(args.compiled)
    path = input_file("--labels", args.labels)
    bad = BadLines(path)
    try:
        for item in classify_file(policy, path):
            if isinstance(item, dg.Diagnostic):
                bad.report(item)
                if not args.keep_going:
                    return EXIT_ERRORS
                continue
            print(json.dumps(item.to_json()))
    except ImportError:  # probabilities as labels use torch
        needs_grader_extra("classifying probability labels")
        raise
    finally:
        bad.close()
    if bad.count:
        print(f"{lines(bad.count, 'bad')} skipped", file=sys.stderr)
    return EXIT_ERRORS if bad.count else EXIT_OK


def cmd_grade(args) -> int:
    from ..data.files import AtomicFile, check_output_file
    from ..data.grade import GRADE_OUTPUT, is_grade_output, read_items, write_grades

    needs_grader_extra("rbrc grade")
    # Everything cheap first (the policy, the output path, every input line,
    # the cache); the model loads last, so no mistake costs a grading run.
    policy = open_policy(args.compiled)
    data = input_file("--data", args.data)
    model_path("--grader", args.grader, "grader")
    out = check_output_file(args.output, "-o", GRADE_OUTPUT, is_grade_output, inputs=[data])
    fh = AtomicFile(out, keep_mode=False)  # made now: an output that cannot be written fails here
    try:
        items, bad = [], BadLines(data)
        try:
            for entry in read_items(policy, data):
                if isinstance(entry, dg.Diagnostic):
                    bad.report(entry)
                else:
                    items.append(entry)
        finally:
            bad.close()
        if bad.count and not args.keep_going:
            fh.discard()
            print(f"{lines(bad.count, 'bad')} in {args.data}; nothing graded (--keep-going grades the rest)",
                  file=sys.stderr)
            return EXIT_ERRORS
        grader = load_grader(args, open_cache(args))
        written = write_grades(policy, grader, items, fh)
    except BaseException:
        fh.discard()
        raise
    fh.commit()
    summary = f"graded {lines(written)} → {args.output}"
    if bad.count:
        summary += f"; {lines(bad.count, 'bad')} skipped"
    print(summary, file=sys.stderr)
    return EXIT_ERRORS if bad.count else EXIT_OK


def open_cache(args):
    """The grade cache, or None. A cache the user chose (--cache, $RBRLANG_CACHE)
    that cannot be opened is an error; the default one a warning, and grading
    goes on without it."""
    from ..runtime.cache import CACHE_ENV, GradeCache, default_cache_path

    if args.no_cache:
        return None
    chosen = args.cache is not None or bool(os.environ.get(CACHE_ENV))
    try:
        return GradeCache(args.cache if args.cache is not None else default_cache_path())
    except PathError as exc:
        if chosen:
            raise
        print(f"rbrc grade: warning: {exc.path}: {exc.cause}; grading without a cache "
              "(set --cache PATH or $RBRLANG_CACHE, or pass --no-cache)", file=sys.stderr)
        return None


def load_grader(args, cache):
    from ..runtime import load_grader as load

    options = dict(cache=cache, use_chat_template=False if args.no_chat_template else None,
                   truncate=args.truncate.replace("-", "_"))
    if args.backend == "hf":
        options.update(device=args.device, dtype=args.dtype, token_budget=args.token_budget, max_batch=args.max_batch)
    elif args.backend == "vllm":
        options.update(dtype=args.dtype)
    try:
        return load(args.grader, backend=args.backend, base_url=args.base_url, **options)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, RbrError):
            raise
        raise GraderError(f"cannot load grader `{args.grader}`: {first_line(exc)}") from None
