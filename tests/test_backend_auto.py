"""`--backend auto` (runtime/loading.py `choose_backend`, cli/grader_args.py):
vLLM only where it is installed, a CUDA GPU is here and the job is large; HF
otherwise, said in one line; grades kept apart by the grader built. This
machine has no GPU, so auto must pick HF here, and say why."""
from __future__ import annotations

import json
import sqlite3

import torch

from rbrlang.runtime.loading import AUTO_VLLM_MIN_PROMPTS, BACKENDS, choose_backend, load_grader
from tests.support.files import SAFETY, write

GRADE_LINE = json.dumps({"prompt": [{"role": "user", "content": "How do I bake bread?"}],
                         "completion": "Mix flour, water and yeast.", "category": "C-R"}) + "\n"


def test_auto_is_a_backend_and_picks_hf_without_a_gpu():
    assert "auto" in BACKENDS and not torch.cuda.is_available()
    backend, why = choose_backend(prompts=10 * AUTO_VLLM_MIN_PROMPTS)
    assert backend == "hf" and why in ("vLLM is not installed", "no CUDA GPU here")
    assert choose_backend(device="cpu") == ("hf", "--device cpu")
    assert choose_backend(model="judge.Q4_1.gguf") == ("hf", "a GGUF file")


def test_the_library_load_grader_takes_auto(tiny_model_dir, caplog):
    with caplog.at_level("INFO", logger="rbrlang"):
        grader = load_grader(str(tiny_model_dir), backend="auto", device="cpu", prompts=5)
    assert type(grader).__name__ == "HFGrader"
    assert "grader backend auto: hf (--device cpu)" in caplog.text


def test_rbrc_grade_auto_says_it_chose_hf_and_keys_the_cache_as_hf(rbrc, tmp_path, tiny_model_dir):
    data, cache = write(tmp_path / "in.jsonl", GRADE_LINE), tmp_path / "grades.sqlite"
    code, _, err = rbrc("grade", SAFETY, "--data", data, "--grader", tiny_model_dir, "--backend", "auto",
                        "--dtype", "float32", "--token-budget", "4096", "--cache", cache, "-o", tmp_path / "a.jsonl")
    lines = [line for line in err.splitlines() if "--backend auto" in line]
    assert code == 0, err
    assert len(lines) == 1 and lines[0].startswith("rbrc grade: --backend auto: hf (")
    with sqlite3.connect(cache) as db:
        keys = {k for (k,) in db.execute("SELECT key FROM grades")}
    assert keys
    # HF chosen is HF: the same grader, so `--backend hf` finds every grade in the cache
    code, _, err = rbrc("grade", SAFETY, "--data", data, "--grader", tiny_model_dir, "--backend", "hf",
                        "--dtype", "float32", "--cache", cache, "-o", tmp_path / "h.jsonl")
    assert code == 0, err
    with sqlite3.connect(cache) as db:
        assert {k for (k,) in db.execute("SELECT key FROM grades")} == keys
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "h.jsonl").read_text()


def test_auto_with_a_base_url_is_a_usage_error(rbrc, tmp_path, tiny_model_dir):
    data = write(tmp_path / "in.jsonl", GRADE_LINE)
    code, _, err = rbrc("grade", SAFETY, "--data", data, "--grader", tiny_model_dir, "--backend", "auto",
                        "--base-url", "http://127.0.0.1:9/v1", "-o", tmp_path / "o.jsonl")
    assert code == 2 and "--base-url is for --backend openai" in err
