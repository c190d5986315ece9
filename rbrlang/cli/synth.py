"""rbrc synth: ranked comparisons made from the policy itself, for `rbrc fit`.

Everything that costs no model load is checked first (the options, the
policy, every prompt line, the output paths and the generation cache); the
generator, the grader and the reward model load last."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from .. import diagnostics as dg
from ..errors import EXIT_ERRORS, EXIT_OK, PathError, RbrError, UsageError

SYNTH_EPILOG = """\
prompts (--prompts), one JSON object per line:
  {"prompt": [{"role": "user", "content": "…"}], "category": "C-R"}   (or "response_type": "…")
output (-o): `rbrc fit`'s comparison lines, one kept completion each:
  {"prompt": […], "completion": "…", "response_type": "…", "completion_label": "<class>",
   "propositions": {name: P(yes)}, "rm_score": 0.3 (with --rm)}
beside it: OUT.stats.json (acceptance per response type and class, what kept replies out)
and OUT.generations.jsonl (every reply: a rerun after a kill resumes from it).
"""


def register(sub) -> None:
    from ..generate.loading import GENERATOR_BACKENDS
    from .grader_args import add_grader_options, positive_int

    p = sub.add_parser("synth", help="generate ranked completions per class from the policy, verified by the grader, "
                                     "as `rbrc fit` data", epilog=SYNTH_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compiled", metavar="COMPILED")
    p.add_argument("--prompts", metavar="FILE.jsonl", required=True, help="the prompts (see below)")
    p.add_argument("-o", "--output", metavar="OUT.jsonl", required=True,
                   help="the comparison lines; replaces only an empty file or an earlier synth output")
    p.add_argument("--per-class", type=positive_int, default=2, metavar="K",
                   help="completions to keep per prompt and class (default 2)")
    p.add_argument("--max-tries", type=positive_int, default=3, metavar="T",
                   help="rounds of generation for each completion not yet kept (default 3)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the sampling seed (default 0)")
    p.add_argument("--min-prob", type=float, metavar="P",
                   help="keep a completion when its class probability is at least P (default: when its class is "
                        "the most probable)")
    p.add_argument("--rm", metavar="MODEL", help="score kept completions with this reward model (`rm_score`)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the instructions and how many generations the run would make; load no model")
    p.add_argument("--keep-going", action="store_true", help="skip bad prompt lines instead of stopping")
    g = p.add_argument_group("generator options")
    g.add_argument("--generator", metavar="MODEL", required=True, help="the generator: a local folder or hub id "
                   "(served, with --generator-backend openai)")
    g.add_argument("--generator-backend", choices=GENERATOR_BACKENDS, default="hf",
                   help="transformers here (hf, default), vLLM's engine (vllm), or a chat-completions server (openai)")
    g.add_argument("--generator-base-url", metavar="URL", help="the server for --generator-backend openai")
    g.add_argument("--generator-device", default="auto", help="hf: auto (default), cpu, cuda, cuda:N")
    g.add_argument("--generator-gpu-memory", type=float, metavar="F",
                   help="vllm: the share of GPU memory the generator's engine takes (vLLM's gpu_memory_utilization; "
                        "leave room for the grader when both are on one GPU)")
    g.add_argument("--max-new-tokens", type=positive_int, default=256, metavar="N",
                   help="tokens per completion at most (default 256)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="X", help="sampling temperature (default 1)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="X", help="nucleus sampling (default 1)")
    g.add_argument("--generations", metavar="PATH", help="the generation cache (default: OUT.generations.jsonl)")
    add_grader_options(p, required=True)
    p.set_defaults(run=cmd_synth)


def beside(out: Path, what: str) -> Path:
    """OUT.jsonl -> OUT.<what>: the files synth keeps next to its output."""
    return out.with_name((out.stem if out.suffix else out.name) + "." + what)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_synth_output(path: Path) -> bool:
    """An earlier synth output: its stats file says so and records these very bytes."""
    try:
        stats = json.loads(beside(path, "stats.json").read_text(encoding="utf-8"))
        return isinstance(stats, dict) and stats.get("output_sha256") == _sha(path)
    except (OSError, ValueError):
        return False


def is_synth_stats(path: Path) -> bool:
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stats, dict) and "rbrc_synth" in stats


def _check_numbers(args) -> None:
    if args.min_prob is not None and not 0 < args.min_prob <= 1:
        raise UsageError(f"--min-prob {args.min_prob}: give a probability in (0, 1]")
    if not args.temperature >= 0:
        raise UsageError(f"--temperature {args.temperature}: give a number of at least 0")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p {args.top_p}: give a number in (0, 1]")
    if args.generator_backend == "openai" and not args.generator_base_url:
        raise UsageError("--generator-backend openai needs --generator-base-url URL (e.g. http://HOST:8000/v1)")
    if args.generator_gpu_memory is not None and (args.generator_backend != "vllm"
                                                  or not 0 < args.generator_gpu_memory <= 1):
        raise UsageError("--generator-gpu-memory is a share in (0, 1] of the GPU for --generator-backend vllm")
    if args.generator_backend != "openai" and args.generator_base_url:
        raise UsageError("--generator-base-url is for --generator-backend openai (a server)")


def cmd_synth(args) -> int:
    from ..compiler.instructions import class_instructions
    from ..files import AtomicFile, check_output_file, write_text
    from ..synth import GenerationCache, read_prompts
    from ..synth.cache import is_cache_file
    from ..synth.run import planned
    from .data import input_file, open_policy
    from .grader_args import check_grader_options, model_path
    from .output import report

    _check_numbers(args)
    check_grader_options(args)
    if args.generator_backend != "openai":
        model_path("--generator", args.generator, "generator")
    policy = open_policy(args.compiled, calibration="check")
    prompts_path = input_file("--prompts", args.prompts)
    prompts, diags = read_prompts(policy, prompts_path)
    errors = [d for d in diags if d.severity == dg.ERROR]
    if diags:
        report(diags, {str(prompts_path): prompts_path.read_text(encoding="utf-8", errors="replace")})
    if errors and not args.keep_going:
        print(f"{len(errors)} bad prompt line{'s' * (len(errors) != 1)} in {args.prompts}; nothing generated "
              "(--keep-going skips them)", file=sys.stderr)
        return EXIT_ERRORS
    if not prompts:
        raise UsageError(f"--prompts {args.prompts}: no prompt routes to a response type; nothing to generate")
    instructions = class_instructions(policy)
    slots, skipped = planned(policy, prompts, args.per_class, instructions)
    used = {(p.response_type, c) for p in prompts for c in policy.response_type(p.response_type).classes}
    for key in sorted(used, key=list(instructions).index):
        problem = instructions[key].problem
        if problem:
            print(f"rbrc synth: {'error' if problem[0].startswith('E') else 'warning'}[{problem[0]}]: "
                  f"{problem[1]}; {problem[2]}", file=sys.stderr)
    if args.dry_run:
        return _dry_run(policy, prompts, instructions, used, slots, args)

    out = check_output_file(args.output, "-o", "an earlier `rbrc synth` output", is_synth_output,
                            inputs=[prompts_path])
    stats_path = beside(out, "stats.json")
    check_output_file(stats_path, "-o (its stats file)", "an `rbrc synth` stats file", is_synth_stats,
                      inputs=[prompts_path])
    cache_path = Path(args.generations) if args.generations else beside(out, "generations.jsonl")
    if cache_path.resolve() in (out.resolve(), prompts_path.resolve()):
        raise PathError(str(cache_path), "is the output or the prompts", "give --generations another file")
    cache = GenerationCache(cache_path)
    fh = AtomicFile(out, keep_mode=False)  # made now: an output that cannot be written fails before any model
    try:
        if cache.loaded:
            print(f"resuming: {cache.loaded} generation request{'s' * (cache.loaded != 1)} cached in {cache_path}"
                  + (f" ({cache.torn} torn line{'s' * (cache.torn != 1)} ignored)" if cache.torn else ""),
                  file=sys.stderr)
        result = _run(policy, prompts, cache, args)
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in result.lines)
        if result.lines:
            fh.write(text)
    except BaseException as exc:
        fh.discard()
        cache.close()
        if isinstance(exc, (KeyboardInterrupt, RbrError)):  # what was made is in the cache: say how to go on
            print(f"rbrc synth: stopped; {len(cache.entries)} generation requests are kept in {cache_path}: run the "
                  "same command again to resume", file=sys.stderr)
        raise
    cache.close()
    stats = _stats(policy, result, args, hashlib.sha256(text.encode()).hexdigest() if result.lines else None)
    print(_table(result), file=sys.stderr)
    if not result.lines:
        fh.discard()
        write_text(stats_path, json.dumps(stats, indent=2) + "\n")
        print(f"rbrc synth: no completion was kept; nothing written to {args.output} (stats: {stats_path})",
              file=sys.stderr)
        return EXIT_ERRORS
    fh.commit()
    write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    print(f"kept {len(result.lines)} of {slots} completions → {args.output} (stats: {stats_path}; "
          f"{result.requests} generation requests, {result.cached} from the cache)", file=sys.stderr)
    return EXIT_OK


def _run(policy, prompts, cache, args):
    from ..generate import GenerationSettings, load_generator
    from ..synth import synthesize
    from .grader_args import load_grader, open_cache
    from .output import plain_warnings

    with plain_warnings("synth"):
        grader = load_grader(args, open_cache(args))
        settings = GenerationSettings(args.max_new_tokens, args.temperature, args.top_p)
        kwargs = {"device": args.generator_device} if args.generator_backend == "hf" else {}
        if args.generator_backend == "vllm" and args.generator_gpu_memory is not None:
            kwargs["gpu_memory_utilization"] = args.generator_gpu_memory
        generator = load_generator(args.generator, backend=args.generator_backend,
                                   base_url=args.generator_base_url, settings=settings, **kwargs)
        rm = None
        if args.rm:
            from ..integrations.reward_model import load_reward_model

            rm = load_reward_model(args.rm, device=args.generator_device)
        try:
            return synthesize(policy, prompts, generator, grader, per_class=args.per_class,
                              max_tries=args.max_tries, seed=args.seed, min_probability=args.min_prob, cache=cache,
                              rm=rm, progress=None if sys.stderr.isatty() else False)
        finally:
            generator.close()


def _dry_run(policy, prompts, instructions, used, slots, args) -> int:
    for key in sorted(used, key=list(instructions).index):
        ins = instructions[key]
        n = sum(p.response_type == key[0] for p in prompts)
        print(f"response {key[0]}, class {key[1]}: {n} prompt{'s' * (n != 1)}, {len(ins.variants)} "
              f"instruction variant{'s' * (len(ins.variants) != 1)}")
        for k, text in enumerate(ins.variants, 1):
            print(f"  variant {k}:")
            print("\n".join(("    | " + line).rstrip() for line in text.split("\n")))
    print(f"would make {slots} to {slots * args.max_tries} generations ({len(prompts)} prompts, --per-class "
          f"{args.per_class}, --max-tries {args.max_tries}) and grade each non-empty one")
    return EXIT_OK


def _stats(policy, result, args, sha) -> dict:
    rows = []
    for (rt, name), tally in result.tallies.items():
        rows.append({"response_type": rt, "class": name, **tally.to_json()})
    return {"rbrc_synth": 1, "output_sha256": sha, "policy": policy.name, "generator": args.generator,
            "grader": args.grader, "per_class": args.per_class, "max_tries": args.max_tries, "seed": args.seed,
            "min_prob": args.min_prob, "rounds": result.rounds, "requests": result.requests,
            "cached_requests": result.cached, "kept": len(result.lines), "classes": rows,
            "skipped": [{"response_type": rt, "class": c, "why": why} for (rt, c), why in result.skipped.items()]}


def _table(result) -> str:
    head = ("response type", "class", "kept", "slots", "generated", "empty", "rejected", "acceptance",
            "kept out most by")
    rows = [head]
    for (rt, name), t in result.tallies.items():
        top = ", ".join(f"{k} ×{v}" for k, v in t.kept_out.most_common(2))
        rows.append((rt, name, str(t.accepted), str(t.slots), str(t.generated), str(t.empty), str(t.rejected),
                     "–" if t.rate is None else f"{t.rate:.0%}", top))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    out = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r[:-1], widths)))
           + "  " + r[-1] for r in rows]
    unreached = sum(t.unreached for t in result.tallies.values())
    if unreached:
        out.append(f"{unreached} completion{'s' * (unreached != 1)} not reached within --max-tries (see kept out "
                   "most by; raise --max-tries, or give the propositions `instruct` lines)")
    return "\n".join(out)
