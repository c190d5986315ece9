"""One grader interface (runtime/base.py) and the OpenAI-compatible client,
against real HTTP on 127.0.0.1 (tests/support/completions_server.py: a small
server with a real transformers model). The same client against a real vLLM
server, and VLLMGrader, are in test_vllm.py."""
from __future__ import annotations

import json
import math
import pickle
import socket
import warnings

import pytest
import torch

import rbrlang
from rbrlang.errors import GraderError, UsageError
from rbrlang.runtime import BACKENDS, Grader, GraderOptions, GraderWarning, HFGrader, OpenAIGrader, load_grader
from rbrlang.runtime.base import BaseGrader, answer_probability, file_fingerprint
from tests.support.completions_server import Behaviour, CompletionsServer
from tests.support.files import SAFETY, SHARED, gold_rows, write
from tests.support.policies import MINIMAL

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/openai-rbr not present")
pytestmark = pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")


@pytest.fixture(scope="module")
def hf(grader):
    """The in-process grader (these tests call the clients they make `grader`)."""
    return grader


@pytest.fixture
def serve(tiny_model_dir, hf):
    """Start a completions server for the tiny model with some behaviour."""
    servers = []

    def start(**behaviour):
        server = CompletionsServer(hf.model, str(tiny_model_dir), behaviour=Behaviour(**behaviour)).__enter__()
        servers.append(server)
        return server
    yield start
    for s in servers:
        s.__exit__(None, None, None)


def items(n):
    rows = gold_rows(n)
    return [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows]


def client(server, model, **kw):
    kw.setdefault("backoff", 0.01)
    return OpenAIGrader(server.url, str(model), **kw)


def test_answer_probability_is_the_yes_share_of_the_answer_mass():
    p, mass = answer_probability([math.log(0.2), math.log(0.1)], [math.log(0.1)])
    assert p == pytest.approx(0.75) and mass == pytest.approx(0.4)
    p, mass = answer_probability([-math.inf], [-math.inf])
    assert math.isnan(p) and mass == 0.0


def test_every_backend_is_a_grader(hf, tiny_model_dir, serve):
    assert isinstance(hf, Grader) and hf.stats.graded >= 0
    assert isinstance(client(serve(), tiny_model_dir), Grader)
    assert BACKENDS == ("hf", "vllm", "openai", "auto")  # auto: one of the first three, chosen at load (loading.py)


def test_load_grader_by_name_and_its_mistakes(tiny_model_dir, hf, serve):
    assert isinstance(load_grader(str(tiny_model_dir), device="cpu"), HFGrader)
    assert load_grader(hf) is hf
    server = serve()
    assert isinstance(load_grader(str(tiny_model_dir), backend="openai", base_url=server.url), OpenAIGrader)
    with pytest.raises(UsageError, match="unknown grader backend 'tgi'; choose one of hf, vllm, openai"):
        load_grader(str(tiny_model_dir), backend="tgi")
    with pytest.raises(UsageError, match="needs the server's base URL") as missing:
        load_grader(str(tiny_model_dir), backend="openai")
    assert missing.value.params == ("base_url",) and "--" not in str(missing.value)  # the argument, not a flag
    with pytest.raises(UsageError, match="a base URL is for the `openai` backend"):
        load_grader(str(tiny_model_dir), backend="hf", base_url=server.url)
    with pytest.raises(UsageError, match="got int"):
        load_grader(3)


@needs_data
def test_server_grades_equal_hf(hf, safety, tiny_model_dir, serve):
    """Token-id prompts over HTTP, P(yes) from the yes/no ids' log-probabilities:
    the same numbers as the in-process grader on the same model."""
    convs, resps = items(6)
    server = serve()
    grader = client(server, tiny_model_dir, prompts_per_request=7, concurrency=3)
    theirs = grader.grade_detailed(safety, convs, resps)
    ours = hf.grade_detailed(safety, convs, resps)
    assert (theirs.p_yes - ours.p_yes).abs().max() < 1e-5
    assert torch.allclose(theirs.answer_mass, ours.answer_mass, rtol=1e-4, atol=0)
    assert theirs.stats.graded == 6 * 23 and theirs.stats.batches == math.ceil(6 * 23 / 7)
    assert theirs.stats.low_mass == ours.stats.low_mass > 0  # random weights: little mass on yes/no
    assert grader.stats.graded == 6 * 23  # running totals
    assert grader.encode(safety, "apology", convs[0], resps[0]) == hf.encode(safety, "apology", convs[0], resps[0])
    assert 1 <= server.behaviour.max_in_flight <= 3


def test_low_answer_mass_warns_at_the_caller_for_every_backend(safety, tiny_model_dir, hf, serve):
    """One warning, from the one pipeline, pointing at the line that called
    `grade` or `grade_detailed` (a fixed stacklevel pointed into runtime/ for
    one backend or the other)."""
    graders = [hf, client(serve(), tiny_model_dir)]
    for grader in graders:
        for call in (grader.grade, grader.grade_detailed):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                call(safety, [[{"role": "user", "content": "hi"}]], ["hello"])
                line = _line() - 1
            found = [w for w in caught if issubclass(w.category, GraderWarning)]
            assert len(found) == 1 and "yes/no answers" in str(found[0].message), [str(w.message) for w in caught]
            assert (found[0].filename, found[0].lineno) == (__file__, line), (type(grader).__name__, call.__name__)


def _line() -> int:
    import inspect
    return inspect.currentframe().f_back.f_lineno


def test_a_backend_scores_rows_and_does_not_redo_the_pipeline():
    with pytest.raises(TypeError, match="overrides grade_detailed: a backend implements _score"):
        class Own(BaseGrader):
            def grade_detailed(self, policy, conversations, responses):
                return None


def test_one_options_object_or_its_fields_as_keywords(tiny_model_dir, tmp_path, serve):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    shared = GraderOptions(use_chat_template=False, truncate="oldest_turns", cache=tmp_path / "c.sqlite",
                           min_answer_mass=0.25, max_length=300)
    server = serve()
    for grader in (HFGrader(model, tok, shared), client(server, tiny_model_dir, options=shared)):
        assert not grader.encoder.chat and grader.encoder.truncate == "oldest_turns"
        assert grader.encoder.max_length == 300 and grader.min_answer_mass == 0.25
        assert grader.cache.path == tmp_path / "c.sqlite"
    keywords = HFGrader(model, tok, use_chat_template=False, truncate="oldest_turns", max_length=300)
    assert not keywords.encoder.chat and keywords.encoder.max_length == 300 and keywords.cache is None
    # A keyword wins over the object it comes with; a backend's own context is the default.
    mixed = HFGrader(model, tok, shared, max_length=None, cache=None)
    assert mixed.encoder.max_length == model.config.max_position_embeddings and mixed.cache is None
    assert client(server, tiny_model_dir).encoder.max_length == 8191
    with pytest.raises(TypeError, match="unexpected keyword argument 'chat'"):
        HFGrader(model, tok, chat=False)


def test_weights_fingerprint_covers_every_weights_format(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    seen = {file_fingerprint(folder)}
    for name in ("model.safetensors", "pytorch_model.bin", "model-q4.gguf"):
        (folder / name).write_bytes(b"w")
        seen.add(file_fingerprint(folder))
    assert len(seen) == 4  # each kind of weights file changes the grader's identity
    (folder / "notes.txt").write_text("not weights")
    assert file_fingerprint(folder) in seen


def test_matches_propositions_and_the_grade_cache(tiny_model_dir, serve, tmp_path):
    text = MINIMAL.replace("good = a and b", "good = a and b and not e") \
        .replace("ok   = a and not b", "ok   = a and not b and not e").replace("bad  = not a", "bad  = not a or e")
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text + "proposition e = matches /^\\s*$/\n"))
    server = serve()
    grader = client(server, tiny_model_dir, cache=tmp_path / "grades.sqlite")
    first = grader.grade_detailed(policy, [[], []], ["", "text"])
    assert first.p_yes[:, policy.proposition_names.index("e")].tolist() == [1.0, 0.0]
    assert first.stats.matched == 2 and first.stats.graded == 4 and first.stats.cached == 0
    seen = server.behaviour.requests
    second = grader.grade_detailed(policy, [[], []], ["", "text"])
    assert second.stats.cached == 4 and second.stats.graded == 0 and server.behaviour.requests == seen
    assert torch.equal(first.p_yes, second.p_yes)


def test_retries_overloaded_and_stalled_servers(safety, tiny_model_dir, serve):
    conv, resp = [[{"role": "user", "content": "hi"}]], ["hello"]
    grader = client(serve(fail_first=2), tiny_model_dir, retries=3)
    grades = grader.grade_detailed(safety, conv, resp)
    assert grades.stats.retries == 2 and torch.isfinite(grades.p_yes).all()
    stalled = serve(stall_first=1, stall_s=3.0)
    grader = client(stalled, tiny_model_dir, retries=2, timeout=1.0)
    grades = grader.grade_detailed(safety, conv, resp)
    assert grades.stats.retries == 1 and stalled.behaviour.requests == 2


def test_gives_up_with_a_clear_error(safety, tiny_model_dir, serve):
    conv, resp = [[{"role": "user", "content": "hi"}]], ["hello"]
    server = serve(fail_first=10)
    with pytest.raises(GraderError, match=r"answered 503: overloaded, try again"):
        client(server, tiny_model_dir, retries=2).grade(safety, conv, resp)
    assert server.behaviour.requests == 3
    bad_request = serve(fail_first=10, fail_status=400)
    with pytest.raises(GraderError, match="answered 400"):
        client(bad_request, tiny_model_dir, retries=5).grade(safety, conv, resp)
    assert bad_request.behaviour.requests == 1  # a 4xx other than 429 is not retried
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GraderError, match=rf"127.0.0.1:{port}/v1/models did not answer after 2 tries: Connect"):
        OpenAIGrader(f"http://127.0.0.1:{port}", str(tiny_model_dir), retries=1, backoff=0.01)


def test_server_without_named_token_logprobs_is_an_error(safety, tiny_model_dir, serve):
    grader = client(serve(top_k_only=True), tiny_model_dir)
    with pytest.raises(GraderError, match="no log-probability for answer token ids .*`logprob_token_ids`"):
        grader.grade(safety, [[{"role": "user", "content": "hi"}]], ["hello"])


def test_wrong_model_name_and_too_long_prompts(safety, tiny_model_dir, serve):
    server = serve()
    with pytest.raises(GraderError, match=r"does not serve `other` \(it serves: .*grader\)"):
        OpenAIGrader(server.url, "other", tokenizer=str(tiny_model_dir))
    short = client(server, tiny_model_dir, max_length=10_000)  # longer than the server's 8192: it says no
    assert short.encoder.max_length == 10_000
    with pytest.raises(GraderError, match="answered 400: This model's maximum context length is 8192"):
        short.grade(safety, [[{"role": "user", "content": "word " * 9000}]], ["hello"])
    own = client(server, tiny_model_dir)  # the server's limit, from /v1/models: a located error before sending
    assert own.encoder.max_length == 8191
    with pytest.raises(GraderError, match="item 0, proposition .* more than the grader's context of 8191"):
        own.grade(safety, [[{"role": "user", "content": "word " * 9000}]], ["hello"])


def test_pickles_without_its_connection(safety, tiny_model_dir, serve, tmp_path):
    grader = client(serve(), tiny_model_dir, cache=tmp_path / "c.sqlite")
    conv, resp = [[{"role": "user", "content": "hi"}]], ["hello"]
    before = grader.grade(safety, conv, resp)
    copy = pickle.loads(pickle.dumps(grader))
    assert torch.equal(copy.grade(safety, conv, resp), before)
    assert copy.stats.cached == 23 - sum(not p.graded for p in safety.propositions)


@needs_data
def test_rbrc_grade_with_a_server(rbrc, tiny_model_dir, hf, safety, serve, tmp_path):
    rows = gold_rows(3)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"][0]["content"],
                                        "category": r.get("category", "C-R")}) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    server = serve()
    code, _, err = rbrc("grade", SAFETY, "--data", data, "--grader", tiny_model_dir,
                        "--backend", "openai", "--base-url", server.url, "--no-cache", "-o", out)
    assert code == 0, err
    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = hf.grade(safety, [r["prompt"] for r in rows], [r["completion"][0]["content"] for r in rows])
    for i, row in enumerate(got):
        assert max(abs(row["propositions"][n] - float(want[i, j]))
                   for j, n in enumerate(safety.proposition_names)) < 1e-5
    assert server.behaviour.requests >= 1
    code, _, err = rbrc("grade", SAFETY, "--data", data, "--grader", tiny_model_dir,
                        "--base-url", server.url, "-o", tmp_path / "o2.jsonl")
    assert code == 2 and "--base-url is for --backend openai" in err


def test_answer_mass_warning_counts_only_the_models_gradings(tiny_grader, tmp_path):
    """A `matches` proposition is answered by its pattern (mass 1): it is not a grading the
    warning counts, in the low ones or in the total."""
    import warnings as _warnings

    import rbrlang
    from rbrlang.runtime.base import GraderWarning

    policy = rbrlang.compile_file(write(tmp_path / "m.rbr", MINIMAL.replace(
        "classes", "proposition empty = matches /^$/\n\nclasses", 1)))
    grader = tiny_grader(min_answer_mass=1.01)  # every grading is low
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        grades = grader.grade_detailed(policy, [[{"role": "user", "content": "hi"}]] * 3, ["a", "b", ""])
    (w,) = [w for w in caught if issubclass(w.category, GraderWarning)]
    assert "for 6 of 6 gradings" in str(w.message) and grades.stats.low_mass == 6
