"""Linear-layer routes at the grader's real shapes: GFLOP/s and error against
float64, one thread, interleaved rounds (issue 15 item 2; bench/RESULTS.md).

Every route computes y = x Wᵀ for fp32 x and W:

  mkl             F.linear as it stands: MKL's sgemm (torch's default for fp32)
  onednn_bf16     F.linear with torch.backends.mkldnn.matmul.fp32_precision =
                  "bf16": oneDNN. Where oneDNN has bf16 hardware for it (AMX)
                  it really rounds to bf16; elsewhere (e.g. AVX-512-BF16 AMD)
                  it was measured to stay fp32. Exact only where it stays fp32.
  onednn_tf32     the same with "tf32"
  to_mkldnn       torch.utils.mkldnn.to_mkldnn's MkldnnLinear (oneDNN fp32,
                  the input converted to and from oneDNN's tensor each call)
  gate_up         the MLP's gate and up projections as one linear (their
                  weights concatenated), MKL: what a fused MLP would run
  private_onednn  torch.ops.mkldnn._linear_pointwise on a reordered weight
                  (a private op, shown only as the ceiling a prototype used)
  private_mkl     torch.ops.mkl._mkl_linear on MKL-packed weights (private;
                  what inductor's freezing emits for fp32 linear layers)

    python bench/kernels.py                  # SmolLM2-135M and `small` shapes
    python bench/kernels.py --rounds 7 --json

Errors are max |y - y64| / max |y64| over the output (fp32 rounding of a
K-long dot product is ~1e-7..1e-6; bf16 rounding is ~1e-3..1e-2).
Timings on a shared machine are noisy: rounds are interleaved (every route
once per round, in rotating order) and the median is reported, with the load
average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (model, layer, K = in features, N = out features); M (rows) is the tokens of one forward.
SHAPES = {
    "smollm2": {"q/o": (576, 576), "k/v": (576, 192), "gate/up": (576, 1536), "down": (1536, 576),
                "lm_head": (576, 49152)},
    "small": {"q/o": (256, 256), "k/v": (256, 64), "gate/up": (256, 1024), "down": (1024, 256),
              "lm_head": (256, 8192)},
}
# Tokens per forward: a suffix batch (23 rows of ~150 tokens), an item's conversation; the
# head runs on one row per proposition only.
ROWS = {"lm_head": 23}
M_BODY = (3456, 640)


def _precision(value: str):
    def run(x, w):
        old = torch.backends.mkldnn.matmul.fp32_precision
        torch.backends.mkldnn.matmul.fp32_precision = value
        try:
            return F.linear(x, w)
        finally:
            torch.backends.mkldnn.matmul.fp32_precision = old
    return run


def routes(x, w, layer):
    """name -> a zero-argument call computing x Wᵀ (weights prepared outside the call)."""
    out = {"mkl": lambda: F.linear(x, w),
           "onednn_bf16": lambda: _precision("bf16")(x, w),
           "onednn_tf32": lambda: _precision("tf32")(x, w)}
    from torch.utils.mkldnn import to_mkldnn

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    mk = to_mkldnn(torch.nn.Sequential(lin))[0]
    out["to_mkldnn"] = lambda: mk(x)
    if layer == "gate/up":
        both = torch.cat([w, w.flip(0)])  # a second weight of the same shape, one linear
        out["gate_up"] = lambda: F.linear(x, both)
    if hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        packed = torch.ops.mkldnn._reorder_linear_weight(w, x.shape[0])
        out["private_onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    if torch._C.has_mkl and hasattr(torch.ops.mkl, "_mkl_linear"):
        mkl_packed = torch.ops.mkl._mkl_reorder_linear_weight(w, x.shape[0])
        out["private_mkl"] = lambda: torch.ops.mkl._mkl_linear(x, mkl_packed, w, None, x.shape[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,small")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    results = []
    with torch.no_grad():
        for model in args.models.split(","):
            for layer, (k, n) in SHAPES[model].items():
                for m in ((ROWS[layer],) if layer in ROWS else M_BODY):
                    x, w = torch.randn(m, k), torch.randn(n, k) / k ** 0.5
                    ref = x.double() @ w.double().T
                    calls = routes(x, w, layer)
                    names = list(calls)
                    times = {name: [] for name in names}
                    errors = {}
                    for name in names:
                        y = calls[name]()  # warm, and the error
                        if name != "gate_up":
                            errors[name] = float((y.double() - ref).abs().max() / ref.abs().max())
                    for r in range(args.rounds):
                        for name in names[r % len(names):] + names[:r % len(names)]:
                            start = time.perf_counter()
                            calls[name]()
                            times[name].append(time.perf_counter() - start)
                    flops = 2 * m * k * n
                    for name in names:
                        med = statistics.median(times[name])
                        f = flops * (2 if name == "gate_up" else 1)
                        results.append({"model": model, "layer": layer, "m": m, "k": k, "n": n, "route": name,
                                        "gflops": f / med / 1e9, "seconds": med, "rel_error": errors.get(name)})
    load_after = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    machine = {"cpu": cpu, "amx_bf16": " amx_bf16" in flags, "avx512_bf16": " avx512_bf16" in flags,
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "load_before": load_before, "load_after": load_after}
    if args.json:
        print(json.dumps({"machine": machine, "results": results}))
        return 0
    print(f"{cpu}; AMX-BF16 {machine['amx_bf16']}, AVX512-BF16 {machine['avx512_bf16']}; "
          f"{machine['threads']} thread(s); torch {torch.__version__}; load {load_before[0]:.2f} -> "
          f"{load_after[0]:.2f}; median of {args.rounds} interleaved rounds")
    names = sorted({r["route"] for r in results}, key=[r["route"] for r in results].index)
    print(f"{'model':8} {'layer':8} {'M×K×N':>17} " + " ".join(f"{n:>14}" for n in names))
    key = lambda r: (r["model"], r["layer"], r["m"])  # noqa: E731
    for group in dict.fromkeys(key(r) for r in results):
        rows = {r["route"]: r for r in results if key(r) == group}
        first = next(iter(rows.values()))
        cells = []
        for n in names:
            r = rows.get(n)
            err = "" if r is None or r["rel_error"] is None else f"/{r['rel_error']:.0e}"
            gflops = "" if r is None else f"{r['gflops']:.0f}"
            cells.append(f"{gflops}{err:>7}".rjust(14))
        shape = f"{first['m']}×{first['k']}×{first['n']}"
        print(f"{group[0]:8} {group[1]:8} {shape:>17} " + " ".join(cells))
    print("cells: GFLOP/s / relative error vs float64 (gate_up: both projections' FLOPs, no error column)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
