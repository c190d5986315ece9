"""rbrc eval: a compiled policy's grader against gold labels, its rewards on
held-out comparisons, an HTML report, and (with --calibrate) calibration.json."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import PathError
from .output import plain_warnings

EVAL_EPILOG = """\
gold set (--gold), one human-labelled completion per line:
  {"prompt": [{"role": "user", "content": "…"}], "completion": "…", "category": "C-R",
   "propositions": {"apology": true, "refuses": false, …}}
  ("response_type" may replace "category"; labels are true or false; a line labels
   at least every proposition its response type's classes use)
probabilities (--probs), P(yes) for the gold lines: `rbrc grade --data GOLD` output,
  or one line per gold line, in order: {"propositions": {"apology": 0.93, …}}
comparisons (--comparisons): the format of `rbrc fit`, each line with `propositions`
  (P(yes)) unless --grader is given
"""


def register(sub) -> None:
    import argparse

    from .grader_args import add_grader_options

    p = sub.add_parser("eval", help="evaluate a compiled policy against gold labels and comparisons; "
                                    "write an HTML report",
                       description="Score the grader against human gold labels (per proposition and per class), "
                                   "the rewards on held-out comparisons (error rates of RM, RBR and RM + RBR), "
                                   "and write DIR/report.html with its plots.",
                       epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--report", metavar="DIR", required=True,
                   help="the report folder: created, or replaced when it holds an earlier report")
    p.add_argument("--gold", metavar="FILE.jsonl", help="human-labelled completions (boolean `propositions`)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--probs", metavar="FILE.jsonl",
                     help="precomputed P(yes) for the gold lines (e.g. `rbrc grade` output), one line each")
    p.add_argument("--comparisons", metavar="FILE.jsonl", help="held-out comparison data (see `rbrc fit`)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit Platt scaling of P(yes) on the gold fit split, report it, and store it in "
                        "COMPILED/calibration.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit/report split of the gold prompts")
    add_grader_options(p, required=False, group=src,
                       grader_help="grade the gold set (and unlabelled comparisons) with this model (a local folder, "
                                   "FILE.gguf or hub id; served, with --backend openai)")
    p.set_defaults(run=cmd_eval)


def cmd_eval(args) -> int:
    from .grader_args import check_grader_options, load_grader, needs_extra, open_cache

    needs_extra("rbrc eval", ("numpy", "torch", "sklearn", "matplotlib"), "report")
    from ..evaluate import evaluate, write_report
    from ..evaluate.report import check_report_folder
    from ..policy import load_policy
    from ..policy.calibration import write_calibration
    from ..policy.format import POLICY_FILE, resolve_folder

    # The weights only where rewards are scored; the calibration unless it is being refitted now
    # (a stale one is what --calibrate replaces).
    policy = load_policy(args.compiled, weights="check" if args.comparisons else "ignore",
                         calibration="ignore" if args.calibrate else "check")
    folder = resolve_folder(args.compiled)
    inputs = [Path(x) for x in (args.gold, args.probs, args.comparisons) if x] + [folder / POLICY_FILE]
    check_report_folder(args.report, inputs, "--report")  # refuse a folder we may not replace before any slow work
    if args.grader:
        check_grader_options(args)
    with plain_warnings("eval"):
        grader = load_grader(args, open_cache(args), policy) if args.grader else None
        ev = evaluate(policy, gold=args.gold, probs=args.probs, grader=grader, comparisons=args.comparisons,
                      calibrate=args.calibrate, seed=args.seed, folder=str(args.compiled),
                      progress=sys.stderr.isatty())
    page = write_report(ev, args.report, inputs)
    if ev.gold is not None:
        g = ev.gold
        print(f"gold: {g.rows} completions, class accuracy {g.class_accuracy:.1%} "
              f"(report split {g.report_accuracy:.1%})")
    if ev.rewards is not None:
        for row in ev.rewards.rows:
            rates = ", ".join(f"{k} {'–' if v is None else f'{v:.3f}'}" for k, v in row.errors.items())
            print(f"{row.response_type}: {row.pairs} pairs, error rate {rates}")
    if args.calibrate:
        cal = ev.calibration
        if cal is None or not cal.maps:
            raise PathError(args.gold, "no proposition has both yes and no labels on the fit split",
                            "nothing to calibrate; calibration.json was not written")
        path = write_calibration(folder, cal)
        print(f"calibrated {len(cal.maps)} propositions → {path}")
    print(f"report → {page}", file=sys.stderr)
    return 0
