"""The benchmark machinery (bench/flops.py, bench/measure.py, bench/gpu.py's
dry run, bench/grading.py end to end at the smallest scale): what its figures
are made of, checked without timing anything."""
from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import flops  # noqa: E402
import measure  # noqa: E402
from tests.support.reference import trie_size  # noqa: E402

TINY = flops.Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=1024)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


# --- the FLOP model ---------------------------------------------------------------------------

def test_the_flop_model_matches_a_hand_count_for_the_tiny_config():
    assert flops.Shape.of(tiny_llama().config) == TINY
    # per layer: q, o 64×64; k, v 64×32 (2 KV heads of 16); MLP 3 × 64×128; 2 FLOPs a multiply-add
    assert TINY.linear_per_token == 2 * (2 * 64 * (64 + 32 + 32 + 64) + 2 * 3 * 64 * 128)
    assert TINY.attention_per_key == 2 * 4 * 4 * 16
    assert TINY.head_per_row == 2 * 64 * 1024
    assert TINY.flops(10, 55, 1) == 10 * 147456 + 55 * 512 + 131072


def test_the_flop_model_agrees_with_torchs_flop_counter_on_a_real_forward():
    """torch's FlopCounterMode counts every matmul of a real forward. With eager
    attention (Q·Kᵀ and P·V as batched matmuls over the full L×L square: the
    causal mask is applied, not skipped) the model's count with keys = L² must
    be exactly what it counts."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, length = tiny_llama(), 37
    model.set_attn_implementation("eager")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=torch.arange(length)[None], logits_to_keep=1)
    assert counter.get_total_flops() == TINY.flops(length, length * length, 1)


def test_trie_work_counts_each_prefix_once_at_its_depth():
    work = flops.trie_work([(1, 2, 3), (1, 2, 4), (5,)])
    # (1,2,3): positions 0,1,2 attend to 1+2+3 keys; (1,2,4) adds position 2 (3 keys); (5,) one token, one key
    assert (work.tokens, work.keys, work.rows) == (5, 10, 3)
    rng = random.Random(0)
    rows = [tuple(rng.randrange(3) for _ in range(rng.randrange(1, 9))) for _ in range(200)]
    assert flops.trie_work(rows).tokens == trie_size(rows)
    assert flops.useful_flops(TINY, work) == TINY.flops(5, 10, 3)
    assert flops.computed_flops(TINY, 10, work) == TINY.flops(10, 20, 3)  # at the mean context, 2 keys a token


# --- rounds and statistics --------------------------------------------------------------------

def test_rounds_rotate_so_each_engine_goes_first_once():
    names = ["ours", "vllm", "encode"]
    orders = [measure.round_order(names, r) for r in range(5)]
    assert [o[0] for o in orders[:3]] == names and orders[3] == names
    assert all(sorted(o) == sorted(names) for o in orders)


def test_summary_and_per_round_ratios():
    s = measure.summary([3.0, 1.0, 2.0, 10.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["spread"]) == (2.0, 1.0, 10.0, 4.5)
    # each round's ratio under its own load: the median of 0.5, 0.5, 2 and not a ratio of medians
    r = measure.ratio_summary([1.0, 2.0, 8.0], [2.0, 4.0, 4.0])
    assert (r["median"], r["min"], r["max"]) == (0.5, 0.5, 2.0)
    with pytest.raises(ValueError):
        measure.ratio_summary([1.0], [1.0, 2.0])


def test_variants_and_ours_options_parse_to_constructor_keywords():
    got = measure.parse_variants(["stock:fused_attention=False,token_budget=4096", "fast"], ["max_batch=32"])
    assert got == [("stock", {"max_batch": 32, "fused_attention": False, "token_budget": 4096}),
                   ("fast", {"max_batch": 32})]
    assert measure.parse_variants([], ["name=packed"]) == [("ours", {"name": "packed"})]
    for bad, says in ((["a:fused_attention"], "not KEY=VALUE"), (["a", "a"], "given twice"), (["a b"], "NAME")):
        with pytest.raises(SystemExit, match=says):
            measure.parse_variants(bad)


# --- CPU time and machine state ---------------------------------------------------------------

CHILD = """
import sys, time
while time.process_time() < 0.3:
    pass
print("burnt", flush=True)
sys.stdin.readline()
"""


def test_tree_cpu_seconds_counts_a_living_child_process():
    """vLLM computes in child processes: their CPU time must be in the figure."""
    before = measure.tree_cpu_seconds()
    own = time.process_time()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "burnt"
        spent = measure.tree_cpu_seconds() - before
        assert spent - (time.process_time() - own) >= 0.25, spent  # the child's 0.3 s (in clock ticks), not ours
    finally:
        child.communicate("\n")


def test_steal_and_load_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 10 1 2 30 0 0\ncpu0 50 2 25 400 5 0 1 15 0 0\n")
    assert measure.steal_jiffies(stat) == 30 and measure.cpu_jiffies(stat) == 998
    assert measure.steal_jiffies(tmp_path / "absent") is None
    before = {"time": 0.0, "load_average": [1.0, 1.0, 1.0], "steal_jiffies": 30, "cpu_jiffies": 1000}
    after = {"time": 10.0, "load_average": [2.0, 1.0, 1.0], "steal_jiffies": 80, "cpu_jiffies": 2000}
    change = measure.machine_change(before, after)
    assert change["steal_fraction"] == 0.05 and change["load_average_after"] == [2.0, 1.0, 1.0]


# --- the scripts ------------------------------------------------------------------------------

def run_bench(*args, timeout=600):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_grading_bench_runs_end_to_end_in_rounds_with_two_variants(tmp_path):
    out = tmp_path / "grading.json"
    code, stdout, err = run_bench("bench/grading.py", "--config", "tiny", "--n", "1", "--rounds", "2", "--threads",
                                  "1", "--skip-naive", "--skip-padded", "--variant", "a",
                                  "--variant", "b:fused_attention=False", "--json", "--out", out)
    assert code == 0, err
    result = json.loads(stdout)
    assert json.loads(out.read_text()) == result
    a, b = result["methods"]["a"], result["methods"]["b"]
    assert len(a["seconds"]["rounds"]) == 2 and a["tokens_every_round_equal"]
    # b (stock attention) cannot read packed rows, so it pads: more tokens, the same answers.
    assert a["tokens_per_item"] < b["tokens_per_item"] and a["max_abs_diff_p_yes"] < 1e-5
    assert b["max_abs_diff_p_yes"] < 1e-5 and result["variants"]["b"]["fused_attention"] is False
    assert set(result["ratios_ours_over"]) == {"a/sorted", "b/sorted"}
    assert result["machine_load"]["load_average_before"] and "encode" in result["methods"]


def test_an_unknown_variant_option_is_hfgraders_own_error():
    code, _, err = run_bench("bench/grading.py", "--config", "tiny", "--n", "1", "--rounds", "1",
                             "--variant", "x:no_such_option=1")
    assert code != 0 and "no_such_option" in err


def test_the_gpu_script_plans_its_jobs_and_says_at_once_what_is_missing(tmp_path):
    code, out, _ = run_bench("bench/gpu.py", "--plan", "--smollm2", tmp_path, "--variant", "stock:fused_attention=False")
    jobs = [line.split(" ", 1)[0] for line in out.splitlines()]
    assert code == 0 and jobs == ["half_b_vllm", "half_b_stock", "smollm2_vllm"]
    assert "--config half_b --device cuda --dtype bfloat16" in out and "--variant stock:fused_attention=False" in out
    no_vllm = importlib.util.find_spec("vllm") is None
    code, out, err = run_bench("bench/gpu.py", "--out", tmp_path / "out", timeout=60)
    if no_vllm:
        assert code == 3 and err.count("\n") == 1 and "vLLM is not installed" in err and "--without-vllm" in err
    code, out, err = run_bench("bench/gpu.py", "--without-vllm", "--gold", tmp_path / "none.jsonl", timeout=60)
    assert code == 3 and "no gold items at" in err


def test_the_gpu_script_dry_run_records_everything_in_one_folder(tmp_path):
    """--dry-run: the same steps on this CPU at the smallest scale (ours and stock transformers)."""
    code, out, err = run_bench("bench/gpu.py", "--dry-run", "--without-vllm", "--out", tmp_path)
    assert code == 0, err
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["dry_run"] and {"torch", "python", "nvidia_smi"} <= set(record["environment"])
    job = record["jobs"]["half_b_stock"]
    assert job["rc"] == 0 and job["result"]["methods"]["ours"]["tokens_every_round_equal"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.json", "gpu.log", "summary.txt"]
    assert "== half_b_stock (rc 0" in (tmp_path / "summary.txt").read_text()
