"""rbrc commands over data files: classify and grade.

Both read JSON lines (formats in docs/COMMANDS.md); a bad line is a located
diagnostic, a path that cannot be used a one-line `PathError`. `grade` checks
everything it can (the policy, every input line, the output path, the cache)
before it loads the grader model, so a mistake costs seconds, not a run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import diagnostics as dg
from ..errors import EXIT_ERRORS, EXIT_OK, PathError, UsageError
from ..files import special_kind
# The grader helpers live in grader_args.py; they are named here too for the
# commands that import them from `data` (explain, tiny-grader).
from .grader_args import (add_grader_options, check_device, check_grader_options, load_failure,  # noqa: F401
                          load_grader, model_files, model_path, needs_extra, needs_grader_extra, open_cache,
                          positive_int, quiet_model_loading)
from .output import BadLines, lines, plain_warnings

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
    p.add_argument("-o", "--output", metavar="OUT.jsonl", required=True,
                   help="written when grading ends; replaces only an empty file or an earlier grade output")
    add_grader_options(p, required=True)
    p.add_argument("--keep-going", action="store_true",
                   help="report bad lines and grade the rest (exit status 1 if any line was bad)")
    p.set_defaults(run=cmd_grade)


def open_policy(compiled: str, weights: str = "ignore", calibration: str = "ignore"):
    """A compiled policy folder (or its policy.json); a `.rbr` or a missing folder is a `PolicyError`.

    Fitted files are not read unless asked for (`load_policy`'s options):
    classify and grade use neither, so a stale one never stops them."""
    from ..policy import load_policy

    return load_policy(compiled, weights=weights, calibration=calibration)


def input_file(option: str, name: str) -> Path:
    """A JSONL input that exists and is a file (read errors come from `read_jsonl`)."""
    if not name.strip():
        raise UsageError(f"{option}: the path is empty; give a JSON-lines file")
    path = Path(name)
    if path.is_dir():
        raise PathError(name, "is a folder", f"{option} takes a JSON-lines file (one JSON object per line)")
    if not path.exists():
        raise PathError(name, "no such file", f"check the path given to {option}")
    kind = special_kind(path.stat().st_mode)
    if kind:  # a pipe may never end (or wait forever for a writer), a device may never end: both are read whole
        raise PathError(name, f"is {kind}, not a file", f"{option} takes a JSON-lines file; save the data to one")
    return path


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
    from ..data.grade import GRADE_OUTPUT, check_lengths, is_grade_output, read_items, write_grades

    # Everything cheap first (the grader options, the policy, the output path,
    # every input line, the cache); the model loads last, so no mistake costs a
    # grading run.
    check_grader_options(args)
    policy = open_policy(args.compiled)
    data = input_file("--data", args.data)
    out = check_output_file(args.output, "-o", GRADE_OUTPUT, is_grade_output, inputs=[data])
    fh = AtomicFile(out, keep_mode=False)  # made now: an output that cannot be written fails here
    bad = BadLines(data)
    try:
        items = []
        try:
            for entry in read_items(policy, data):
                if isinstance(entry, dg.Diagnostic):
                    bad.report(entry)
                else:
                    items.append(entry)
        finally:
            bad.close()
        if bad.count and not args.keep_going:
            return _nothing_graded(fh, bad, args.data)
        with plain_warnings("grade"):
            graded = sum(p.graded for p in policy.propositions)
            grader = load_grader(args, open_cache(args), policy, prompts=len(items) * graded)
            # Prompts over the grader's context, found from token counts before any forward pass.
            items, long = check_lengths(policy, grader, items, data)
            if long:
                try:
                    for d in long:
                        bad.report(d)
                finally:
                    bad.close()
            if long and not args.keep_going:
                return _nothing_graded(fh, bad, args.data)
            written = write_grades(policy, grader, items, fh, progress=None)  # a bar on a terminal only, as fit and eval
    except BaseException:
        fh.discard()
        raise
    fh.commit()
    summary = f"graded {lines(written)} → {args.output}"
    if bad.count:
        summary += f"; {lines(bad.count, 'bad')} skipped"
    print(summary, file=sys.stderr)
    return EXIT_ERRORS if bad.count else EXIT_OK


def _nothing_graded(fh, bad: BadLines, name: str) -> int:
    fh.discard()
    print(f"{lines(bad.count, 'bad')} in {name}; nothing graded (--keep-going grades the rest)", file=sys.stderr)
    return EXIT_ERRORS
