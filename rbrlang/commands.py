"""rbrc commands beyond the compiler's own: import-yaml and classify."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import diagnostics as dg


def register(sub) -> None:
    p = sub.add_parser("import-yaml", help="convert a policy in the RBR paper's YAML format to .rbr")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-o", "--output", metavar="OUT.rbr", required=True)
    p.add_argument("--name", help="policy name (default: the YAML file's name)")
    p.set_defaults(run=cmd_import_yaml)

    p = sub.add_parser("classify", help="classify labelled completions (JSON lines) with a compiled policy")
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--labels", metavar="FILE.jsonl", required=True)
    p.add_argument("--keep-going", action="store_true",
                   help="report bad lines and go on (exit status 1 if any line was bad)")
    p.set_defaults(run=cmd_classify)


def cmd_import_yaml(args) -> int:
    from .check import check_file
    from .yaml_import import import_yaml

    result = import_yaml(args.path, args.name)
    if result.text is None:
        print(dg.render_all(result.diagnostics, result.sources), file=sys.stderr)
        return 1
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.text, encoding="utf-8")
    # Written even if it does not check, so nothing is lost; say what is wrong.
    _, diags, sources = check_file(out)
    if diags:
        print(dg.render_all(diags, sources), file=sys.stderr)
        print(f"\n{dg.summary(diags)}", file=sys.stderr)
    print(f"imported {args.path} → {out}", file=sys.stderr)
    return 1 if dg.has_errors(diags) else 0


def cmd_classify(args) -> int:
    from .labels import classify_file
    from .policy import load_policy

    policy = load_policy(args.compiled)
    path = Path(args.labels)
    if not path.is_file():
        print(f"rbrc classify: error: {path}: no such file", file=sys.stderr)
        return 1
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
        print(f"{bad} bad line{'s' * (bad != 1)} skipped", file=sys.stderr)
    return 1 if bad else 0
