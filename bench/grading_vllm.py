"""Grading benchmark against vLLM: ours (HFGrader, in one or more
configurations) and vLLM's offline engine (VLLMGrader) with and without
automatic prefix caching, in one run, on the same model, the same policy, the
same items and so the same prompt token ids (both graders take them from the
shared prompt encoder; vLLM gets token-id prompts, one generated token, and the
log-probabilities of the yes/no ids).

    python bench/grading_vllm.py                     # small config, N=32, CPU, 5 rounds
    python bench/grading_vllm.py --n 16 --rounds 3 --json
    python bench/grading_vllm.py --variant stock:fused_attention=False --variant ours   # two of ours, side by side
    python bench/grading_vllm.py --bind 0-1          # vLLM compute threads on cores 0-1 (VLLM_CPU_OMP_THREADS_BIND)
    python bench/grading_vllm.py --config half_b --device cuda --dtype bfloat16 --n 256   # on a GPU (bench/gpu.py)
    python bench/grading_vllm.py --grader PATH/SmolLM2-135M-Instruct.Q4_1.gguf --n 8   # a real judge

How it measures (bench/measure.py says why each):
- every grader is built once, warmed on one other item (HFGrader keeps the
  shared head of every prompt; vLLM compiles its graphs), and kept alive;
- `--rounds` rounds (default 5), each grading all N items once with every
  grader, in an order rotated by one each round; vLLM's prefix cache is reset
  (`LLM.reset_prefix_cache()`) before each of its rounds, so every round
  measures the same work;
- per grader: wall seconds (and, on CUDA, CUDA-event seconds for ours: vLLM
  runs in its own processes, so its figure is the wall clock), CPU seconds of
  this process and all its descendants (psutil; vLLM computes in its engine
  core process), medians with min and spread; the median of per-round ratios
  ours / each vLLM engine;
- deterministic work counts: ours, the tokens it forwarded (`GradeStats`);
  vLLM, the prompt tokens less its prefix-cache hits (each request's
  `RequestOutput.num_cached_tokens`, summed in `GradeStats.engine_cached_tokens`;
  whole blocks of its block size, which is reported); and the trie minimum;
- achieved GFLOP/s from bench/flops.py: useful (the trie minimum's FLOPs, the
  same for all) and computed (each grader's own token count);
- `encode`: the prompt encoding alone (every whole prompt tokenised), timed in
  the rounds too; every grader's time includes it (the same work for each);
- load average and /proc/stat steal before and after.

`--grader DIR|FILE.gguf`: a real model in place of a `--config` preset. vLLM
0.32 has no GGUF loader, so a GGUF file is loaded (dequantised) by ours and
saved as a plain folder for the vLLM engines: both grade the same weights.

vLLM on CPU (the `vllm-cpu` build) keeps one core for its scheduler process and
runs the model on the others: on a 2-core machine that is one compute thread,
where torch in this process uses two (`--torch-threads 1` to match). `--bind
0-1` puts vLLM's compute threads on both cores. Needs vLLM; see README.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import (add_variant_options, machine_change, machine_state, parse_variants, ratio_summary,  # noqa: E402
                     round_order, summary, timed)


def vllm_block_size(engine):
    try:
        return engine.llm.llm_engine.vllm_config.cache_config.block_size
    except AttributeError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="gold conversations (N)")
    ap.add_argument("--config", default="small", help="tiny.py preset (vLLM's CPU attention needs heads of "
                                                       "size 32, 64, 80, …: `small` has 32)")
    ap.add_argument("--grader", metavar="DIR|FILE.gguf", help="a real model instead of a preset")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--bind", default=None, help="VLLM_CPU_OMP_THREADS_BIND for the vLLM engines (CPU)")
    ap.add_argument("--kv-bytes", type=int, default=1 << 30, help="vLLM's KV cache on CPU (kv_cache_memory_bytes)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=None,
                    help="each vLLM engine's share of GPU memory (default 0.5 / number of engines)")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch threads for ours (default: torch's)")
    ap.add_argument("--skip-no-cache", action="store_true", help="leave out vLLM without prefix caching")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout (and no table)")
    ap.add_argument("--out", metavar="FILE", help="also write the JSON object to FILE")
    add_variant_options(ap)
    args = ap.parse_args()
    variants = parse_variants(args.variant, args.ours)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # no usage report to vLLM's stats server
    if args.bind:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.bind
    warnings.simplefilter("ignore")

    import torch
    import vllm

    from flops import Shape, computed_flops, trie_work, useful_flops
    from grading import grader_path, load_items
    from rbrlang.policy import load_policy
    from rbrlang.runtime import HFGrader, VLLMGrader
    from rbrlang.runtime.gguf import is_gguf

    torch.manual_seed(0)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    start_state = machine_state()
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    policy = load_policy(ROOT / "compiled" / "safety")
    convs, resps = load_items(args.n + 1)
    warm, (convs, resps) = (convs[args.n:], resps[args.n:]), (convs[:args.n], resps[:args.n])
    with tempfile.TemporaryDirectory() as tmp:
        path = grader_path(args, Path(tmp), dtype, policy)
        ours = {name: HFGrader.from_pretrained(str(path), device=args.device, dtype=dtype, **options)
                for name, options in variants}
        first = next(iter(ours.values()))
        if is_gguf(path):  # the engines get the same dequantised weights as a plain folder
            from tests.support.real_model import save_dequantised

            path = save_dequantised(first.model, first.tokenizer, Path(tmp) / "dequantised")
        params = sum(p.numel() for p in first.model.parameters())
        shape = Shape.of(first.model.config)
        items = first.encoder.encode_items(policy, convs, resps)
        rows = [e.ids for item in items for e in item.values()]
        prompt_tokens, work = sum(len(r) for r in rows), trie_work(rows)
        for g in ours.values():
            g.grade_detailed(policy, *warm)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # vLLM sizes its KV cache from the free GPU memory

        peers = [("vllm_prefix_cache", True)] + ([] if args.skip_no_cache else [("vllm_no_prefix_cache", False)])
        memory = ({"kv_cache_memory_bytes": args.kv_bytes} if not cuda
                  else {"gpu_memory_utilization": args.gpu_memory_utilization or round(0.5 / len(peers), 3)})
        engines = {}
        for name, caching in peers:
            engines[name] = VLLMGrader(str(path), dtype=args.dtype, enable_prefix_caching=caching,
                                       max_model_len=8192, enforce_eager=args.enforce_eager,
                                       **memory)
            engines[name].grade_detailed(policy, *warm)
        block_size = vllm_block_size(next(iter(engines.values())))

        def encode():
            first.encoder.encode_items(policy, convs, resps)

        runners = {**{k: (lambda g=g: g.grade_detailed(policy, convs, resps)) for k, g in ours.items()},
                   **{k: (lambda g=g: g.grade_detailed(policy, convs, resps)) for k, g in engines.items()},
                   "encode": encode}
        timings = {k: [] for k in runners}
        computed = {k: [] for k in runners if k != "encode"}
        grades = {}
        for r in range(args.rounds):
            for name in round_order(list(runners), r):
                engine = engines.get(name)
                if engine is not None and dict(peers)[name]:
                    engine.llm.reset_prefix_cache()  # each round the same work: no hits from the last one
                result, timing = timed(runners[name], cuda=cuda and name in ours)
                timings[name].append(timing)
                if name in ours:
                    computed[name].append(result.stats.forwarded)
                elif engine is not None:
                    computed[name].append(result.stats.prompt_tokens - result.stats.engine_cached_tokens)
                if name != "encode":
                    grades.setdefault(name, result)
        for engine in engines.values():
            engine.close()
    end_state = machine_state()

    base = next(iter(ours))
    diffs = {k: float((g.p_yes.double() - grades[base].p_yes.double()).abs().max())
             for k, g in grades.items() if k != base}
    seconds = {k: [t.seconds for t in v] for k, v in timings.items()}
    graders = {}
    for k, ts in timings.items():
        entry = {"seconds": summary(seconds[k]), "cpu_seconds": summary([t.cpu_seconds for t in ts])}
        if any(t.gpu_seconds is not None for t in ts):
            entry["cuda_event_seconds"] = summary([t.gpu_seconds for t in ts])
        if k in computed:
            counts = computed[k]
            entry["computed_tokens"] = counts[0] if len(set(counts)) == 1 else counts
            med = entry["seconds"]["median"]
            entry["useful_gflops"] = round(useful_flops(shape, work) / med / 1e9, 2)
            if counts[0] is not None:
                entry["computed_gflops"] = round(computed_flops(shape, counts[0], work) / med / 1e9, 2)
                entry["tokens_vs_minimum"] = round(counts[0] / work.tokens, 4)
            entry["items_per_second"] = round(args.n / med, 3)
        graders[k] = entry
    ratios = {f"{o}/{p}": ratio_summary(seconds[o], seconds[p])
              for o in ours for p in [*engines, *[x for x in ours if x != o]]}
    out = {
        "benchmark": "grading_vllm",
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.get_num_threads()} "
                   f"threads, vLLM bind {os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'auto')}"
                   + (f", {torch.cuda.get_device_name()}" if cuda else ""),
        "vllm": vllm.__version__, "torch": torch.__version__, "vllm_block_size": block_size,
        "config": args.config, "params": params, "dtype": args.dtype, "device": args.device, "n": args.n,
        "rounds": args.rounds, "variants": dict(variants),
        "prompts": len(rows), "prompt_tokens": prompt_tokens, "minimum_tokens": work.tokens,
        "useful_gflop": round(useful_flops(shape, work) / 1e9, 3),
        "graders": graders,
        "ratios_ours_over": ratios,
        "max_abs_diff_p_yes_vs_" + base: diffs,
        # Other work on the machine changes every figure: say how busy it was.
        "machine_load": machine_change(start_state, end_state),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.json:
        print(json.dumps(out))
    else:
        print(report(out, list(ours), list(engines)))
    return 0


def report(out: dict, ours: list[str], engines: list[str]) -> str:
    """The JSON object as a table (also bench/gpu.py's summary)."""
    load = out["machine_load"]
    lines = [f"{out['machine']}; vLLM {out['vllm']} (block size {out['vllm_block_size']}); config {out['config']} "
             f"({out['params'] / 1e6:.1f}M params, {out['dtype']}, {out['device']}); N={out['n']}: "
             f"{out['prompts']} prompts, {out['prompt_tokens']} prompt tokens (minimum {out['minimum_tokens']}); "
             f"{out['rounds']} rounds; load average {load['load_average_before']} → {load['load_average_after']}, "
             f"steal {load['steal_fraction']}",
             f"{'grader':22} {'median s':>9} {'min s':>8} {'spread':>7} {'CPU s':>8} {'tokens':>9} {'× min':>6} "
             f"{'useful GF/s':>11} {'comp. GF/s':>10}"]
    for k, e in out["graders"].items():
        s, c = e["seconds"], e["cpu_seconds"]
        tokens = e.get("computed_tokens")
        tokens = tokens if isinstance(tokens, int) else "varies" if tokens else ""
        lines.append(f"{k:22} {s['median']:9.3f} {s['min']:8.3f} {s['spread']:7.1%} {c['median']:8.2f} "
                     f"{tokens:>9} {e.get('tokens_vs_minimum', ''):>6} {e.get('useful_gflops', ''):>11} "
                     f"{e.get('computed_gflops', ''):>10}"
                     + (f"  (CUDA events {e['cuda_event_seconds']['median']:.3f} s)" if "cuda_event_seconds" in e
                        else ""))
    for pair, r in out["ratios_ours_over"].items():
        lines.append(f"{pair:44} median of per-round ratios {r['median']:.3f} "
                     f"(min {r['min']:.3f}, max {r['max']:.3f})")
    diffs = next(v for k, v in out.items() if k.startswith("max_abs_diff_p_yes_vs_"))
    lines.append("max |ΔP(yes)| vs " + ours[0] + ": " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    return "\n".join(lines)


if __name__ == "__main__":  # vLLM starts worker processes
    sys.exit(main())
