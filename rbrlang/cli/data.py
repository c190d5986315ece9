"""rbrc commands over data files: classify and grade.

Both read JSON lines (formats in docs/COMMANDS.md); a bad line is a located
diagnostic, a path that cannot be used a one-line `PathError`. `grade` checks
everything it can (the policy, every input line, the output path, the cache)
before it loads the grader model, so a mistake costs seconds, not a run."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import diagnostics as dg
from ..errors import EXIT_ERRORS, EXIT_OK, GraderError, PathError, RbrError, UsageError
from .output import BadLines, first_line, lines, plain_warnings

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
    p.add_argument("--token-budget", type=positive_int, default=16384, help="padded tokens per batch")
    p.add_argument("--max-batch", type=positive_int, default=64)
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
    if not name.strip():
        raise UsageError(f"{option}: the path is empty; give a JSON-lines file")
    path = Path(name)
    if path.is_dir():
        raise PathError(name, "is a folder", f"{option} takes a JSON-lines file (one JSON object per line)")
    if not path.exists():
        raise PathError(name, "no such file", f"check the path given to {option}")
    return path


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch size, a token budget)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give a number of at least 1")
    return value


MODEL_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def model_path(option: str, name: str, what: str) -> None:
    """A model argument that is plainly a local path must be a folder; a hub id is left to transformers."""
    path = Path(name).expanduser()
    local = name.startswith(("/", "./", "../", "~")) or path.exists()
    if local and not path.exists():
        raise PathError(name, f"cannot load {what}: no such folder", _takes(option))
    if path.exists() and not path.is_dir():
        raise PathError(name, f"cannot load {what}: it is a file, not a model folder", _takes(option))


def _takes(option: str) -> str:
    return f"{option} takes a model folder (config.json, tokenizer files, weights) or a hub id"


def model_files(option: str, name: str, what: str) -> None:
    """A local model folder holds a model's files (for a tokenizer: tokenizer
    files), checked just before loading: transformers' own message for a folder
    of something else is a truncated line about tokenizer backends."""
    path = Path(name).expanduser()
    if path.is_dir():
        wanted = TOKENIZER_FILES if "tokenizer" in what else MODEL_FILES
        if not any((path / f).is_file() for f in wanted):
            raise PathError(name, f"cannot load {what}: the folder holds no {' or '.join(wanted)}", _takes(option))


def load_failure(option: str, name: str, what: str, exc: BaseException) -> GraderError:
    """A model that transformers could not load, said in one line. A name that is
    no local folder was tried as a hub id: say so, and name a local folder it
    may be a slip for (`tiny-grder` for `tiny-grader`)."""
    message = f"cannot load {what} `{name}`: {first_line(exc).rstrip(':')}"
    if not Path(name).expanduser().exists():
        message += f" (there is no local folder `{name}`, so it was tried as a hub id"
        try:
            folders = [p.name for p in Path.cwd().iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            folders = []
        near = dg.closest(name, folders)
        message += f"; did you mean `./{near}`?)" if near else ")"
    return GraderError(message)


def check_device(option: str, value: str) -> None:
    """`--device`: a name torch knows, and a device this machine has, checked
    before any model loads (torch's own errors would come after the load, as
    tracebacks)."""
    if value == "auto":
        return
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {value}: not a device; use auto, cpu, cuda or cuda:N") from None
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        raise GraderError(f"{option} {value}: this machine has no {device.type} device that torch "
                          f"{torch.__version__} can use; use --device cpu, or auto")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise GraderError(f"{option} {value}: this machine has {count()} {device.type} device"
                          f"{'s' * (count() != 1)} (numbered from 0)")


def needs_extra(what: str, modules: tuple[str, ...], extra: str) -> None:
    """A one-line error naming the pip extra when a command's libraries are missing."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise RbrError(f"{what} needs {', '.join(modules[:-1])} and {modules[-1]} ({module} is missing): "
                           f"pip install 'rbrlang[{extra}]'")


def needs_grader_extra(what: str) -> None:
    needs_extra(what, ("torch", "transformers"), "grader")


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
    finally:
        bad.close()
    if bad.count:
        print(f"{lines(bad.count, 'bad')} skipped", file=sys.stderr)
    return EXIT_ERRORS if bad.count else EXIT_OK


def cmd_grade(args) -> int:
    from ..files import AtomicFile, check_output_file
    from ..data.grade import GRADE_OUTPUT, is_grade_output, read_items, write_grades

    needs_grader_extra("rbrc grade")
    # Everything cheap first (the policy, the output path, every input line,
    # the cache); the model loads last, so no mistake costs a grading run.
    policy = open_policy(args.compiled)
    data = input_file("--data", args.data)
    model_path("--grader", args.grader, "grader")
    if args.backend == "hf":
        check_device("--device", args.device)
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
        if args.backend != "openai":
            model_files("--grader", args.grader, "grader")
        with plain_warnings("grade"):
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


def quiet_model_loading() -> None:
    """transformers' per-weight loading bar is noise in a log (it is kept on a terminal)."""
    if not sys.stderr.isatty():
        from transformers.utils import logging

        logging.disable_progress_bar()


def load_grader(args, cache):
    from ..runtime import load_grader as load

    options = dict(cache=cache, use_chat_template=False if args.no_chat_template else None,
                   truncate=args.truncate.replace("-", "_"))
    if args.backend == "hf":
        options.update(device=args.device, dtype=args.dtype, token_budget=args.token_budget, max_batch=args.max_batch)
    elif args.backend == "vllm":
        options.update(dtype=args.dtype)
    quiet_model_loading()
    try:
        return load(args.grader, backend=args.backend, base_url=args.base_url, **options)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, RbrError):
            raise
        raise load_failure("--grader", args.grader, "grader", exc) from None
