"""rbrc commands of the authoring side: check, compile, fmt, explain, import-yaml."""
from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path

from .. import diagnostics as dg
from ..errors import ConversationError, EXIT_ERRORS, EXIT_OK, PathError, PolicyError, UsageError
from . import output
from .output import report


def register(sub) -> None:
    p = sub.add_parser("check", help="check policies and print diagnostics")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--deny-warnings", action="store_true", help="fail on warnings too")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("compile", help="compile a policy into a folder a trainer loads")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (default: compiled/<policy name>)")
    p.add_argument("--check", action="store_true", help="fail if the output folder is stale; write nothing")
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser("fmt", help="rewrite policies in the canonical layout")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--check", action="store_true", help="fail if a file is not formatted; write nothing")
    p.add_argument("--diff", action="store_true", help="print what would change; write nothing")
    p.set_defaults(run=cmd_fmt)

    p = sub.add_parser("explain", help="show classes as sums of products, features, and prompts")
    p.add_argument("target", metavar="FILE_OR_COMPILED")
    p.add_argument("--proposition", metavar="NAME", help="print this proposition's full grader prompt")
    p.add_argument("--conversation", metavar="JSON", help="a JSON file with the conversation's messages")
    p.add_argument("--response", metavar="TEXT", help="the response to show in the prompt")
    p.add_argument("--tokenizer", metavar="MODEL", help="count prompt sizes in this tokenizer's tokens")
    p.add_argument("--synth", action="store_true",
                   help="print every class's generation instructions (what `rbrc synth` asks for), with sizes")
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser("import-yaml", help="convert a policy in the RBR paper's YAML format to .rbr")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-o", "--output", metavar="OUT.rbr", required=True)
    p.add_argument("--name", help="policy name (default: the YAML file's name)")
    p.set_defaults(run=cmd_import_yaml)



def cmd_check(args) -> int:
    from ..compiler import check_policy

    all_diags, sources = [], {}
    for path in args.files:
        result = check_policy(path)
        all_diags += result.diagnostics
        sources.update(result.sources)
    all_diags = dg.normalise(all_diags)
    report(all_diags, sources)
    failed = dg.has_errors(all_diags) or (args.deny_warnings and all_diags)
    if not failed and not output.is_json():
        print(f"ok: {len(args.files)} file{'s' * (len(args.files) != 1)} checked", file=sys.stderr)
    return EXIT_ERRORS if failed else EXIT_OK


def cmd_compile(args) -> int:
    from ..compiler.codegen import stale_files, write_output
    from ..compiler import compile_policy
    from ..policy.format import POLICY_FILE

    if args.output is not None and not args.output.strip():
        raise UsageError("-o: the output folder's name is empty; give a folder, or leave -o out for "
                         "compiled/<policy name>")
    started = time.perf_counter()
    result = compile_policy(args.file)
    report(result.diagnostics, result.sources)
    if result.failed:
        return EXIT_ERRORS
    comp = result.value
    out = Path(args.output) if args.output is not None else Path("compiled") / comp.checked.name
    if args.check:
        if out.exists() and not out.is_dir():
            raise PathError(out, "is a file, not a compiled policy folder", "give -o the compiled folder to check")
        if not out.exists():
            raise PathError(out, "does not exist, so it is not up to date",
                            f"run `rbrc compile {args.file} -o {out}` and commit the result")
        if not (out / POLICY_FILE).is_file():
            raise PathError(out, f"is not a compiled policy folder (it has no {POLICY_FILE})",
                            "give -o the compiled folder to check")
        stale = stale_files(comp.files, out)
        if stale:
            fix = f"run `rbrc compile {args.file} -o {out}` and commit the result"
            output.problem("\n".join([f"{out} is stale; differs from a fresh compile in:"]
                                     + [f"  {rel}" for rel in stale] + [f"help: {fix}"]),
                           f"{out} is stale; differs from a fresh compile in: {', '.join(stale)}", fix)
            return EXIT_ERRORS
        print(f"{out} is up to date", file=sys.stderr)
        return EXIT_OK
    stale = write_output(comp.files, out, sources=[Path(name) for name in result.sources], option="-o")
    elapsed = time.perf_counter() - started
    print(f"compiled {comp.checked.name} → {out} ({len(comp.files)} files, {elapsed:.2f}s)", file=sys.stderr)
    for line in stale:  # fitted files the edit made stale: kept, and said so once here
        print(f"rbrc compile: warning: {line}", file=sys.stderr)
    return EXIT_OK


def cmd_fmt(args) -> int:
    from ..compiler import format_policy
    from ..files import write_text
    from ..source import display_name

    status = EXIT_OK
    unchanged = 0
    for name in args.files:
        path = Path(name)
        result = format_policy(path)
        report(result.diagnostics, result.sources)
        if result.failed:
            status = EXIT_ERRORS
            continue
        shown = display_name(path)  # the name the reader gave the file's text
        before, after = result.sources[shown], result.value
        if after == before:
            unchanged += 1
            continue
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                before.splitlines(True), after.splitlines(True), f"{shown} (original)", f"{shown} (formatted)"))
        if args.check or args.diff:
            output.problem(f"{shown}: not formatted", f"{shown}: not formatted", f"run `rbrc fmt {name}`")
            status = max(status, EXIT_ERRORS)
        else:
            try:
                write_text(path, after)  # atomic, keeps the file's mode
            except PathError as exc:  # say so and go on with the other files
                output.error("fmt", exc)
                status = EXIT_ERRORS
                continue
            print(f"formatted {shown}", file=sys.stderr)
    if unchanged and status == EXIT_OK:  # say so: silence reads as "did it run?"
        print(f"{unchanged} file{'s' * (unchanged != 1)} already formatted", file=sys.stderr)
    return status


def cmd_explain(args) -> int:
    from ..compiler import explain_target, load_target
    from ..compiler.explain import SAMPLE_CONVERSATION, SAMPLE_RESPONSE

    if args.proposition is None:
        given = [o for o, v in (("--conversation", args.conversation), ("--response", args.response)) if v is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'} with --proposition NAME "
                             "(the prompt they fill in); add it")
    elif args.tokenizer:
        raise UsageError("--tokenizer counts the prompt sizes of the summary; it does not go with --proposition")
    if args.synth and args.proposition:
        raise UsageError("--synth prints the class instructions, --proposition one grader prompt: give one of them")
    loaded = load_target(args.target)
    if loaded.failed:
        report(loaded.diagnostics, loaded.sources)
        return EXIT_ERRORS
    policy = loaded.value
    if args.proposition:
        if args.proposition not in policy.proposition_names:
            near = dg.did_you_mean(args.proposition, policy.proposition_names)
            known = ", ".join(policy.proposition_names)
            raise UsageError(f"--proposition: the policy has no proposition `{args.proposition}`; "
                             + (f"{near} (it has {known})" if near else f"it has {known}"))
        conversation, response = SAMPLE_CONVERSATION, SAMPLE_RESPONSE
        if args.conversation:
            conversation = _read_conversation(Path(args.conversation))
        if args.response is not None:
            response = args.response
        try:
            sys.stdout.write(policy.render(args.proposition, conversation, response) + "\n")
        except PolicyError as exc:  # a `matches` proposition has no prompt
            raise UsageError(f"--proposition {args.proposition}: {exc}")
        return EXIT_OK
    tokenizer = None
    if args.tokenizer:
        from .data import load_failure, model_files, model_path, needs_grader_extra, quiet_model_loading

        needs_grader_extra("--tokenizer")
        model_path("--tokenizer", args.tokenizer, "a tokenizer")
        model_files("--tokenizer", args.tokenizer, "a tokenizer")
        from transformers import AutoTokenizer

        quiet_model_loading()
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        except (OSError, ValueError, KeyError) as exc:
            raise load_failure("--tokenizer", args.tokenizer, "a tokenizer", exc) from None
    if args.synth:
        from ..compiler.instructions import explain_instructions

        sys.stdout.write(explain_instructions(policy, tokenizer))
        return EXIT_OK
    sys.stdout.write(explain_target(policy, tokenizer).unwrap())
    return EXIT_OK


def _read_conversation(path: Path) -> list:
    """`--conversation FILE`: a JSON list of messages; a bad file is a one-line error."""
    import json

    from ..policy.rendering import check_conversation

    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise PathError(path, "is a folder", "--conversation takes a JSON file of messages")
    except UnicodeDecodeError:
        raise PathError(path, "is not UTF-8 text", "--conversation takes a JSON file of messages")
    except OSError as exc:
        raise PathError.from_os(path, exc, "cannot read")
    try:
        conversation = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PathError(f"{path}:{exc.lineno}:{exc.colno}", f"not valid JSON: {exc.msg}", MESSAGES)
    try:
        check_conversation(conversation)
    except ConversationError as exc:
        raise PolicyError(f"{path}: {exc}; {MESSAGES}")
    return conversation


MESSAGES = 'write the conversation as [{"role": "user", "content": "…"}, …]'


def cmd_import_yaml(args) -> int:
    from ..compiler import check_policy, import_yaml
    from ..files import check_output_file, write_text

    if args.name is not None:
        check_policy_name(args.name)
    result = import_yaml(args.path, args.name)
    if result.failed:
        report(result.diagnostics, result.sources)
        return EXIT_ERRORS
    text = result.value
    out = Path(args.output)
    # An existing `.rbr` may hold a user's edits: never overwritten (unless it
    # already is exactly this import, when writing changes nothing).
    check_output_file(out, "-o", "this same import", lambda p: p.read_bytes() == text.encode("utf-8"),
                      inputs=[Path(args.path)], refused="exists with other text; import-yaml never overwrites a file")
    write_text(out, text)
    # Written even if it does not check, so nothing is lost; say what is wrong.
    checked = check_policy(out)
    report(checked.diagnostics, checked.sources)
    print(f"imported {args.path} → {out}", file=sys.stderr)
    return EXIT_ERRORS if checked.failed else EXIT_OK


def check_policy_name(name: str) -> None:
    """`--name`: it is written as `policy NAME`, so it must be a name of the language."""
    import re

    from ..compiler.yaml_import import RESERVED

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        suggestion = re.sub(r"\W", "_", name.strip())
        if suggestion and suggestion[0].isdigit():
            suggestion = "_" + suggestion
        raise UsageError(f"--name {name!r}: a policy name holds letters, digits and `_`, and does not start with a "
                         "digit" + (f"; e.g. --name {suggestion}" if suggestion.strip("_") else ""))
    if name in RESERVED:
        raise UsageError(f"--name {name}: `{name}` is a reserved word in rbrlang; choose another name")
