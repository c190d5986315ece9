"""rbrc commands for a policy's author: test (policy unit tests) and diff (what a change does).

Both are thin: the test file and the tests' results are `compiler/testfile.py`
and `compiler/testing.py`; the structure diff is `compiler/diff.py`, the diff on
data `evaluate/policy_diff.py`. Grading goes through the one path every command
uses (`data.probabilities`) and the grade cache."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EXIT_ERRORS, EXIT_OK, PathError, UsageError
from . import output
from .grader_args import add_grader_options, check_grader_options, load_grader, open_cache
from .output import plain_warnings, report

TEST_EPILOG = """\
tests live beside the policy: `rbrc test policies/safety.rbr` runs policies/safety.rbrtest
(the language of test files: docs/LANGUAGE.md, "Policy tests").
without --grader, tests whose answers cover their response type check the class logic alone;
with --grader, every test's completion is graded and its named answers checked (--tolerance).
"""

DIFF_EPILOG = """\
OLD and NEW are .rbr files or compiled folders. With --data or --gold (JSON lines: prompt,
completion, category or response_type, and optional "propositions" answers), every line is
classified under both; answers a line lacks, and those of a proposition whose grader prompt
changed (--data) or whose question changed (--gold: human labels), come from --grader, through
the grade cache: unchanged prompts cost nothing. --data may be `rbrc grade` output too.
"""


def register(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("test", help="run a policy's unit tests (NAME.rbrtest beside NAME.rbr)",
                       epilog=TEST_EPILOG, formatter_class=raw)
    p.add_argument("files", nargs="+", metavar="FILE", help="a policy (.rbr: its .rbrtest beside it) or a test file")
    p.add_argument("--examples", action="store_true",
                   help="also grade every proposition's own examples (needs --grader): does the judge agree?")
    p.add_argument("--tolerance", type=_tolerance, default=0.5, metavar="T",
                   help="with --grader: a `yes` holds at P(yes) >= 1-T, a `no` at P(yes) <= T (default 0.5)")
    p.add_argument("--junit", metavar="FILE.xml", help="also write the results as JUnit XML (for CI systems)")
    add_grader_options(p, required=False, grader_help="grade the tests' completions with this model "
                                                      "(a local folder or hub id); without it: logic only")
    p.set_defaults(run=cmd_test)

    p = sub.add_parser("diff", help="what a policy change does: its structure, and classes and rewards on data",
                       epilog=DIFF_EPILOG, formatter_class=raw)
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="FILE.jsonl", help="completions to classify under both policies")
    data.add_argument("--gold", metavar="FILE.jsonl", help="a gold set (human labels) to classify under both")
    p.add_argument("--top", type=_count, default=10, metavar="N", help="largest reward moves to list (default 10)")
    add_grader_options(p, required=False, grader_help="grade what the lines do not answer (a local folder or hub id)")
    p.set_defaults(run=cmd_diff)


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in [0, 1]; e.g. 0.3 (yes means P(yes) >= 0.7)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


# --- rbrc test ---------------------------------------------------------------------------------

def _test_file(name: str) -> Path:
    from ..compiler.testfile import TEST_SUFFIX, tests_path_for

    path = Path(name)
    if path.suffix == ".rbr":
        tests = tests_path_for(path)
        if not tests.exists():
            raise PathError(tests, f"no tests for {name}",
                            f"write them in {tests.name} beside the policy (docs/LANGUAGE.md, \"Policy tests\")")
        return tests
    if path.is_dir():
        raise PathError(name, "is a folder", f"give a policy (.rbr) or its test file ({TEST_SUFFIX})")
    return path


def cmd_test(args) -> int:
    from ..compiler.testfile import load_tests
    from ..compiler import testing

    if args.examples and not args.grader:
        raise UsageError("--examples grades the propositions' examples: give --grader MODEL")
    if not args.grader and args.tolerance != 0.5:
        raise UsageError("--tolerance is for the grader's answers: give --grader MODEL")
    junit = None
    if args.junit is not None:
        from ..files import check_output_file

        if not args.junit.strip():
            raise UsageError("--junit: the path is empty; give a file for the JUnit XML")
        junit = check_output_file(args.junit, "--junit", "an earlier JUnit report", _is_junit,
                                  inputs=[Path(f) for f in args.files])
    if args.grader:
        check_grader_options(args)
    suites, status = [], EXIT_OK
    for name in args.files:
        loaded = load_tests(_test_file(name))
        report(loaded.diagnostics, loaded.sources)
        if loaded.failed:
            status = EXIT_ERRORS
            continue
        suites.append(loaded.value)
    if status != EXIT_OK:  # every file checked before anything is graded
        return status
    grader = None
    runs = []
    with plain_warnings("test"):
        if args.grader:
            grader = load_grader(args, open_cache(args))
        for suite in suites:
            runs.append(_run_suite(suite, grader, args, testing))
    for run in runs:
        failures = [d for r in run.results for d in r.failures] + testing.example_failures(run)
        report(failures, run.suite.sources)
        if output.is_json():
            _json_rows(run)
        else:
            if failures:
                print(file=sys.stderr)
            sys.stdout.write(testing.summary(run))
    if junit is not None:
        from ..files import write_text

        write_text(junit, testing.junit(runs))
    return EXIT_ERRORS if any(run.failed for run in runs) else EXIT_OK


def _run_suite(suite, grader, args, testing):
    if grader is None:
        return testing.Run(suite, tuple(testing.run_logic(suite, t) for t in suite.tests))
    from dataclasses import replace

    from ..data.probabilities import probabilities

    policy = suite.policy
    graded = [t for t in suite.tests if t.completion is not None]
    p = probabilities(policy, grader, [list(t.conversation) for t in graded], [t.completion for t in graded],
                      calibration=None, progress=None, desc="grading tests").p_yes if graded else []
    rows = {t.name: p[k] for k, t in enumerate(graded)}
    results = []
    for t in suite.tests:
        if t.name in rows:
            results.append(testing.run_graded(suite, t, rows[t.name], args.tolerance))
        else:  # no text: its logic is all there is to test
            results.append(testing.run_logic(suite, t))
    examples = ()
    if args.examples:
        cases = testing.example_cases(suite)
        found = []
        # Each example is graded under its own proposition alone: the policy with only that proposition.
        for name in dict.fromkeys(c.proposition for c in cases):
            mine = [c for c in cases if c.proposition == name]
            alone = replace(policy, propositions=(policy.proposition(name),))
            q = probabilities(alone, grader, [list(c.conversation) for c in mine], [c.response for c in mine],
                              calibration=None, progress=False).p_yes
            found += [testing.ExampleResult(c, float(q[k, 0])) for k, c in enumerate(mine)]
        examples = tuple(found)
    return testing.Run(suite, tuple(results), examples, args.tolerance, grader=args.grader)


def _json_rows(run) -> None:
    """`--format json`: one JSON line per test and per example on stdout (the
    run's array of diagnostics, the failures among them, follows as always)."""
    for r in run.results:
        print(json.dumps({"file": r.test.span.file, "line": r.test.span.line, "test": r.test.name,
                          "status": r.status, "class": r.cls, "reward": r.reward, "reason": r.reason},
                         ensure_ascii=False))
    for e in run.examples:
        print(json.dumps({"file": e.case.span.file, "line": e.case.span.line, "example": e.case.proposition,
                          "label": "yes" if e.case.label else "no", "p_yes": e.p_yes,
                          "agrees": e.agrees(run.tolerance)}, ensure_ascii=False))


def _is_junit(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(200)
    except (OSError, UnicodeDecodeError):
        return False
    return "<testsuites" in head


# --- rbrc diff ---------------------------------------------------------------------------------

def _stale_fitted(folder: Path, new) -> list[str]:
    """What OLD's fitted files hold that NEW cannot load (the loader's own checks)."""
    from ..policy.calibration import stale_calibration
    from ..policy.format import CALIBRATION_FILE, WEIGHTS_FILE
    from ..policy.weights import stale_weights

    lines = [f"{folder / WEIGHTS_FILE}: " + (f"`{s.response_type}` " if s.response_type else "") +
             f"stops loading ({s.why}); refit with `rbrc fit`" for s in stale_weights(folder, new)]
    if (folder / CALIBRATION_FILE).is_file():
        lines += [f"{folder / CALIBRATION_FILE}: stops loading ({why}); refit with `rbrc eval --calibrate`"
                  for why in stale_calibration(folder, new)]
    return lines


def cmd_diff(args) -> int:
    from ..compiler import load_target
    from ..compiler.diff import structure_diff

    if args.grader and not (args.data or args.gold):
        raise UsageError("--grader grades the lines of --data or --gold: give one of them")
    policies = []
    for name in (args.old, args.new):
        if not Path(name).exists():
            raise PathError(name, "no such file or folder", "give a .rbr policy or a compiled folder")
        loaded = load_target(name)
        report(loaded.diagnostics, loaded.sources)
        if loaded.failed:
            return EXIT_ERRORS
        policies.append(loaded.value)
    old, new = policies
    diff = structure_diff(old, new)  # a PolicyError (one line) when they share no response type
    stale = _stale_fitted(Path(args.old), new) if Path(args.old).is_dir() else []
    data = None
    if args.data or args.gold:
        from .data import input_file
        from ..evaluate.policy_diff import diff_on_data

        flag, name = ("--gold", args.gold) if args.gold else ("--data", args.data)
        path = input_file(flag, name)
        grader = None
        if args.grader:
            check_grader_options(args)
        with plain_warnings("diff"):
            if args.grader:
                grader = load_grader(args, open_cache(args))
            data = diff_on_data(old, new, path, grader, prompt_changed=diff.prompt_changed,
                                question_changed=diff.question_changed, gold=bool(args.gold), top=args.top,
                                flag=flag)
    if output.is_json():
        row = {"structure": diff.to_json(), "stale_fitted": list(stale),
               "data": data.to_json() if data is not None else None}
        sys.stdout.write(json.dumps(row, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(diff.text())
        for line in stale:
            sys.stdout.write(f"fitted: {line}\n")
        if data is not None:
            sys.stdout.write(data.text())
    return EXIT_OK
