"""The measuring machinery of the grading benchmarks (bench/grading.py,
bench/grading_vllm.py, bench/gpu.py): interleaved rounds, CPU seconds of a
process tree, machine load, per-round statistics, and `--ours`/`--variant`.

Why each piece:
- Rounds in rotating order (`round_order`), every engine built once and kept
  alive: a slow spell of the machine (other jobs, a thermal step) then falls on
  every engine in turn rather than on one, and no round pays for a start-up.
- CPU seconds of the whole process tree (`tree_cpu_seconds`): vLLM computes in
  child processes (its engine core), so this process's own CPU time says
  nothing of its work. psutil sums user + system time of this process and
  every living descendant; the engines live across rounds, so a round's
  difference is their work in it (a child that exits inside a round would be
  lost: none does).
- Load average and /proc/stat steal before and after (`machine_state`): on a
  shared or virtual machine every wall-clock figure is only as good as these.
- `summary`: median, min and spread ((max − min) / median) over rounds, and
  `ratio_summary`: the median of per-round ratios (each round's ratio is taken
  under that round's load, so it is steadier than a ratio of medians).
"""
from __future__ import annotations

import ast
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


# --- CPU time and machine state -------------------------------------------------------------

def tree_cpu_seconds(pid: Optional[int] = None) -> float:
    """User + system CPU seconds of a process and all its living descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system
    return total


def steal_jiffies(stat: Path = Path("/proc/stat")) -> Optional[int]:
    """The machine's steal time so far (clock ticks, all CPUs), None where there is no /proc/stat."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal …
    return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None


def cpu_jiffies(stat: Path = Path("/proc/stat")) -> Optional[int]:
    try:
        fields = stat.read_text().splitlines()[0].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[1:9])


def machine_state() -> dict:
    return {"time": time.time(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "steal_jiffies": steal_jiffies(), "cpu_jiffies": cpu_jiffies()}


def machine_change(before: dict, after: dict) -> dict:
    """Load before and after, and the share of all CPU time stolen in between (a VM's hypervisor)."""
    steal = None
    if before["steal_jiffies"] is not None and after["steal_jiffies"] is not None:
        total = after["cpu_jiffies"] - before["cpu_jiffies"]
        steal = (after["steal_jiffies"] - before["steal_jiffies"]) / total if total else 0.0
    return {"load_average_before": before["load_average"], "load_average_after": after["load_average"],
            "steal_fraction": None if steal is None else round(steal, 4),
            "seconds": round(after["time"] - before["time"], 1)}


# --- one timed call ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    seconds: float  # wall clock
    cpu_seconds: float  # this process and its descendants
    gpu_seconds: Optional[float] = None  # CUDA events around the call (this process's work on the current stream)


def timed(fn: Callable[[], Any], cuda: bool = False) -> tuple[Any, Timing]:
    """Run `fn` once; wall, CPU-of-the-tree and (on CUDA) event seconds.
    The CUDA events time only this process's stream: for a vLLM engine (its
    own processes) the wall clock is the figure."""
    start_event = end_event = None
    if cuda:
        import torch

        torch.cuda.synchronize()
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start_event.record()
    cpu, wall = tree_cpu_seconds(), time.perf_counter()
    result = fn()
    if cuda:
        end_event.record()
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, tree_cpu_seconds() - cpu
    gpu = start_event.elapsed_time(end_event) / 1e3 if cuda else None
    return result, Timing(wall, cpu, gpu)


# --- rounds and their statistics ---------------------------------------------------------------

def round_order(names: Sequence[str], r: int) -> list[str]:
    """Round `r`'s order: the names rotated by r, so each goes first, last and between in turn."""
    k = r % len(names) if names else 0
    return list(names[k:]) + list(names[:k])


def summary(values: Sequence[float]) -> dict:
    """Median, min, max and spread ((max − min) / median) of one engine's rounds."""
    if not values:
        return {}
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {"median": round(med, 4), "min": round(lo, 4), "max": round(hi, 4),
            "spread": round((hi - lo) / med, 4) if med else None, "rounds": [round(v, 4) for v in values]}


def ratio_summary(ours: Sequence[float], peer: Sequence[float]) -> dict:
    """The median, min and max of per-round ratios ours / peer (below 1: ours is faster)."""
    ratios = [a / b for a, b in zip(ours, peer, strict=True) if b]
    if not ratios:
        return {}
    return {"median": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
            "max": round(max(ratios), 4)}


# --- HFGrader variants -------------------------------------------------------------------------

def option_value(text: str):
    """A `KEY=VALUE`'s value: a Python literal (False, 4096, 'x', None) where it reads as one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_options(pairs: Sequence[str], where: str) -> dict:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip().isidentifier():
            raise SystemExit(f"{where}: {pair!r} is not KEY=VALUE (e.g. fused_attention=False)")
        out[key.strip()] = option_value(value.strip())
    return out


def parse_variants(variants: Sequence[str], common: Sequence[str] = ()) -> list[tuple[str, dict]]:
    """`--variant NAME[:KEY=VALUE,KEY=VALUE…]` (repeatable) and `--ours KEY=VALUE` (repeatable, given to
    every variant): the HFGrader configurations to run, as (name, constructor options).
    No `--variant`: one, `ours`."""
    shared = parse_options(common, "--ours")
    out: list[tuple[str, dict]] = []
    for spec in variants or ["ours"]:
        name, _, rest = spec.partition(":")
        name = name.strip()
        if not name.replace("_", "").replace("-", "").isalnum():
            raise SystemExit(f"--variant {spec!r}: a variant is NAME or NAME:KEY=VALUE,KEY=VALUE")
        if any(name == n for n, _ in out):
            raise SystemExit(f"--variant {name}: given twice")
        own = parse_options([p for p in rest.split(",") if p.strip()], f"--variant {name}")
        out.append((name, {**shared, **own}))
    return out


def add_variant_options(ap) -> None:
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                    help="an HFGrader constructor option for every variant of ours (repeatable), "
                         "e.g. --ours token_budget=8192")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,…]",
                    help="one configuration of ours to run beside the others (repeatable), "
                         "e.g. --variant stock:fused_attention=False --variant ours")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")


__all__ = ["Timing", "add_variant_options", "machine_change", "machine_state", "parse_variants", "ratio_summary",
           "round_order", "summary", "timed", "tree_cpu_seconds"]
