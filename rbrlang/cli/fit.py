"""rbrc fit: comparison data → the reward's weights, written to COMPILED/weights.json."""
from __future__ import annotations

import os
import sys

from ..errors import EXIT_OK, PathError

FIT_EPILOG = """\
input (--data), one completion per line; lines with the same prompt and response
type are compared, every pair whose labels the `rank` order separates:
  {"prompt": [{"role": "user", "content": "…"}], "completion": "…", "response_type": "hard_refuse",
   "completion_label": "ideal", "rm_score": 0.3, "propositions": {"apology": 0.97, …}}
  ("category" may replace "response_type"; without "propositions" --grader grades the line;
   without "rm_score" the RBR term alone is fitted)
output: COMPILED/weights.json, per response type the weights, bias, margin, decay, data hash
and fit metrics, bound to the response type's schema hash. Error rate: the fraction of
(better, worse) pairs of one prompt the total reward orders wrongly, ties counted as errors.
"""


def register(sub) -> None:
    import argparse

    from .grader_args import add_grader_options

    p = sub.add_parser("fit", help="fit the reward's weights on ranked comparisons; write COMPILED/weights.json",
                       epilog=FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--data", metavar="FILE.jsonl", required=True, help="comparison data (see below)")
    p.add_argument("--decay", type=float, metavar="X",
                   help="L2 weight decay (default: chosen on the validation prompts from a small grid)")
    p.add_argument("--margin", type=float, default=1.0, metavar="M", help="hinge margin (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the train/validation split")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="fraction of prompts held out for validation (default 0.2)")
    add_grader_options(p, required=False, grader_help="grade lines without `propositions` with this model (a local "
                                                      "folder, FILE.gguf or hub id; served, with --backend openai)")
    p.set_defaults(run=cmd_fit)


def cmd_fit(args) -> int:
    # The extras first: the fit's own modules import numpy and torch.
    needs_fit_extra()
    from ..data.comparisons import read_comparisons
    from ..fit import fit_policy
    from ..fit.select import check_settings
    from ..policy.format import resolve_folder
    from ..policy.weights import stale_weights, write_weights
    from .data import input_file, open_policy
    from .grader_args import check_grader_options, load_grader, open_cache
    from ..diagnostics import LOSSY
    from .output import plain_warnings, report

    check_settings(args.decay, args.margin, args.val_fraction)
    if args.grader:
        check_grader_options(args)
    # Fitting owns weights.json: the policy is opened without it (weights a recompile
    # made stale are what this fit replaces), with the calibration the reward will apply.
    policy = open_policy(args.compiled, calibration="check")
    folder = resolve_folder(args.compiled)
    if not os.access(folder, os.W_OK):
        raise PathError(folder, "cannot write weights.json here: permission denied",
                        "fit a copy of the compiled folder you can write")
    stale = stale_weights(folder, policy)  # before any slow work: a weights.json that is not JSON is refused
    data_path = input_file("--data", args.data)
    # The whole data file is checked before any model loads.
    data = read_comparisons(policy, data_path, grader=bool(args.grader))
    if data.warnings:
        report(list(data.warnings), {str(data_path): data_path.read_text(encoding="utf-8", errors=LOSSY)})
    if data.unrouted:
        print(f"{data.unrouted} line{'s' * (data.unrouted != 1)} of {data_path} route to no response type "
              "(no RBR reward there): skipped", file=sys.stderr)
    progress = None if sys.stderr.isatty() else False
    with plain_warnings("fit"):
        prompts = int(data.to_grade.sum()) * sum(p.graded for p in policy.propositions)  # for --backend auto
        grader = load_grader(args, open_cache(args), policy, prompts=prompts) if data.to_grade.any() else None
        result = fit_policy(policy, data, grader=grader, decay=args.decay, margin=args.margin, seed=args.seed,
                            val_fraction=args.val_fraction, progress=progress)
    print(_table(result))
    path = write_weights(folder, policy, result.weights)
    for line in _replaced(stale, result.weights):
        print(f"{path}: {line}", file=sys.stderr)
    if result.graded:
        print(f"graded {result.graded} line{'s' * (result.graded != 1)} with {args.grader}", file=sys.stderr)
    for name, why in result.skipped.items():
        print(f"{name}: not fitted ({why}); its reward stays as before", file=sys.stderr)
    print(f"wrote weights for {len(result.fits)} response type{'s' * (len(result.fits) != 1)} → {path}",
          file=sys.stderr)
    return EXIT_OK


def _replaced(stale, fitted) -> list[str]:
    """One line for each stale part of the old weights.json that this fit replaced or dropped."""
    out = []
    for s in stale:
        if s.response_type is None:
            out.append(f"replaced the old file: {s.why}")
        elif s.response_type in fitted:
            out.append(f"replaced the stale weights of `{s.response_type}`: {s.why}")
        else:
            out.append(f"dropped the stale weights of `{s.response_type}` ({s.why}): this data did not refit "
                       "them, so its reward is the expected class score until a fit does")
    return out


def needs_fit_extra() -> None:
    from .grader_args import needs_extra

    needs_extra("rbrc fit", ("numpy", "torch", "tqdm"), "fit")


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(result) -> str:
    head = ("response type", "pairs", "train/val", "decay", "train loss", "val loss", "train err", "val err",
            "RM val err")
    rows = [head]
    for name, fit in result.fits.items():
        m = fit.metrics
        rows.append((name, str(m["pairs"]), f"{m['train_pairs']}/{m['val_pairs']}",
                     f"{fit.weights.decay:g}" + ("" if m["decay_chosen_by"] == "validation" else "*"),
                     _num(m["train_loss"]), _num(m["val_loss"]), _num(m["train_error"]), _num(m["val_error"]),
                     _num(m["rm_val_error"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    if any(f.metrics["decay_chosen_by"] != "validation" for f in result.fits.values()):
        lines.append("* decay given, or no validation prompts to choose it by")
    return "\n".join(lines)
