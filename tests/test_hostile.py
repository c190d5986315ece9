"""Hostile input (issue 14, D1, D4, D8, D9): bodies and lines built to hurt.

The reward server runs for real (uvicorn on 127.0.0.1, the tiny real grader);
the readers read real files. Whatever comes in, the answer is a 4xx with a
JSON reason or a located one-line error, never a 500, an exit 70, a hang or
memory without bound; what is too large is refused before the work it would
cost (before the body is read, before the grader forwards anything)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rbrlang import diagnostics as dg
from rbrlang.errors import InputError

from tests.support.files import SAFETY, write
from tests.support.policies import MINIMAL

pytestmark = pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")  # random weights: low mass

LINE = {"prompt": [{"role": "user", "content": "Hello?"}], "completion": "Hi.", "category": "C-R"}

# Text that `json.loads` takes but no reader should: each is refused with a reason.
DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_JSON = {
    "deep": (DEEP, "nested too deeply"),
    "deep_object": ('{"a":' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    "huge_integer": ('{"n": ' + "7" * 5000 + "}", "an integer of 5000 digits"),
    "nan": ('{"x": NaN}', "`NaN` is not a JSON number"),
    "infinity": ('{"x": -Infinity}', "`-Infinity` is not a JSON number"),
    "overflow": ('{"x": 1e999}', "too large for a 64-bit float"),
    "lone_high_surrogate": ('{"completion": "ok \\ud800"}', "lone UTF-16 surrogate"),
    "lone_low_surrogate": ('{"completion": "\\udc00"}', "lone UTF-16 surrogate"),
    # json.loads keeps the last value: the first, which the user may mean, is dropped in silence.
    "duplicate_key": ('{"category": "C-R", "completion": "a", "category": "C-X"}', 'the key "category" is given twice'),
}
# Readers of data lines take NaN and Infinity as numbers: each field that holds a number checks it,
# and says which field (fit's `rm_score`, classify's labels); only the server refuses them on sight.
NUMBERS = {"nan", "infinity", "overflow"}


# --- the one JSON parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_parse_json_refuses_what_json_loads_takes_or_crashes_on(name):
    from rbrlang.data.jsonl import JSONTextError, parse_json

    text, says = HOSTILE_JSON[name]
    with pytest.raises(JSONTextError) as caught:
        parse_json(text)
    assert says in caught.value.message and 0 <= caught.value.position < len(text)


def test_a_key_given_twice_is_located_at_its_second_place(minimal_dir, tmp_path, rbrc):
    # Nested, beside the same key in a list's objects and in a string, and spelt with an escape.
    line = ('{"response_type": "r", "x": [{"a": 1}, {"a": 2}], "note": "\\"b\\": 1", '
            '"propositions": {"a": true, "b": false, "\\u0062": true}}')
    labels = write(tmp_path / "l.jsonl", line + "\n")
    code, _, err = rbrc("classify", minimal_dir, "--labels", labels)
    col = line.index('"\\u0062"') + 1
    assert code == 1 and f"{labels}:1:{col}: error[E0300]: the key \"b\" is given twice in one object" in err
    source, caret = err.splitlines()[2:4]  # the caret under the second key, the whole of it
    at = caret.index("^")
    assert source[at:at + caret.count("^")] == '"\\u0062"', err


def test_classify_locates_nan_at_its_field(minimal_dir, tmp_path, rbrc):
    labels = write(tmp_path / "l.jsonl", '{"response_type": "r", "propositions": {"a": NaN, "b": 1e999}}\n')
    code, _, err = rbrc("classify", minimal_dir, "--labels", labels)
    assert code == 1 and f"{labels}:1:41: error[E0304]: label `a` is NaN" in err


def test_parse_json_takes_strict_json_surrogate_pairs_and_escaped_backslashes():
    from rbrlang.data.jsonl import parse_json

    assert parse_json('{"a": [1, -2.5e3, "\\ud83d\\ude00", "\\\\ud800", null, true]}') == \
        {"a": [1, -2500.0, "\U0001F600", "\\ud800", None, True]}
    assert parse_json("-" + "9" * 4000) == -int("9" * 4000)  # under Python's digit limit: a number


# --- input files: bounded reads, no waiting on a pipe --------------------------------------------------

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX files")


@posix_only
def test_check_reads_a_device_no_further_than_the_size_limit(rbrc):
    code, _, err = rbrc("check", "/dev/zero")
    assert code == 1 and "error[E0002]: file is too large" in err and "Traceback" not in err


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.rbr"
    os.mkfifo(path)  # no writer, ever: opening it for reading would wait forever
    return path


@posix_only
def test_a_named_pipe_is_refused_not_waited_on(fifo, tmp_path, rbrc):
    code, _, err = rbrc("check", fifo)
    assert code == 1 and "error[E0001]: cannot read" in err and "it is a named pipe, not a file" in err
    compiled = tmp_path / "compiled"
    assert rbrc("compile", write(tmp_path / "p.rbr", MINIMAL), "-o", compiled)[0] == 0
    code, _, err = rbrc("classify", compiled, "--labels", fifo)
    assert code == 1 and f"{fifo}: is a named pipe, not a file" in err and "Traceback" not in err
    from rbrlang.data.jsonl import read_jsonl
    from rbrlang.errors import PathError

    with pytest.raises(PathError, match="it is a named pipe, not a file"):  # the library too
        list(read_jsonl(fifo))


# --- JSON-lines readers: classify, grade, fit ---------------------------------------------------------


def readers(policy):
    """Every JSON-lines reader, each as path -> list of results or diagnostics
    (fit's reader raises a DataError carrying them: unpacked here)."""
    from rbrlang.data.classify import classify_file
    from rbrlang.data.comparisons import read_comparisons
    from rbrlang.data.grade import read_items

    def comparisons(path):
        try:
            return list(read_comparisons(policy, path, grader=True).lines)
        except InputError as exc:
            return list(exc.diagnostics)

    return {"classify": lambda p: list(classify_file(policy, p)), "grade": lambda p: list(read_items(policy, p)),
            "fit": comparisons}


def assert_located(results, path, lines: int):
    for r in results:
        if isinstance(r, dg.Diagnostic):
            assert r.span.file == str(path) and 1 <= r.span.line <= lines and r.message, r
            assert "\n" not in r.message


@pytest.mark.parametrize("name", sorted(set(HOSTILE_JSON) - NUMBERS))
def test_every_reader_locates_a_hostile_line(minimal, tmp_path, name):
    policy = minimal
    text, says = HOSTILE_JSON[name]
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(LINE) + "\n" + text + "\n", encoding="utf-8")
    for reader, read in readers(policy).items():
        found = [r for r in read(path) if isinstance(r, dg.Diagnostic) and r.code == "E0300"]
        assert [d.span.line for d in found] == [2] and says in found[0].message, (reader, found)


def test_an_over_long_line_is_one_located_error_and_the_rest_is_read(minimal, tmp_path, monkeypatch):
    from rbrlang.data import jsonl
    from rbrlang.data.grade import read_items

    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 1024)  # the limit, small enough for a test file
    path = tmp_path / "in.jsonl"
    long = dict(LINE, completion="x" * 5000)
    path.write_text("".join(json.dumps(r) + "\n" for r in (LINE, long, LINE)), encoding="utf-8")
    got = list(read_items(minimal, path))
    assert isinstance(got[1], dg.Diagnostic) and got[1].span.line == 2 and "longer than" in got[1].message
    assert [g.line for g in (got[0], got[2])] == [1, 3]


def test_grade_reports_a_lone_surrogate_at_its_line_and_keep_going_grades_the_rest(minimal_dir, tmp_path, rbrc,
                                                                                 tiny_model_dir):
    compiled = minimal_dir
    bad = json.dumps({**LINE, "completion": "\udcff"})  # json.dumps writes it as the escape `\\udcff`
    data = write(tmp_path / "in.jsonl", "\n".join([json.dumps(LINE), bad, json.dumps(LINE)]) + "\n")
    out = tmp_path / "o.jsonl"
    grade = ("grade", compiled, "--data", data, "--grader", tiny_model_dir, "-o", out, "--no-cache")
    code, _, err = rbrc(*grade)
    assert code == 1 and f"{data}:2:" in err and "lone UTF-16 surrogate" in err and not out.exists(), err
    code, _, err = rbrc(*grade, "--keep-going")
    assert code == 1 and "Traceback" not in err and "internal error" not in err, err
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 3]


JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
# Any code point, lone surrogates included (json.dumps writes them as \\uXXXX escapes).
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)


def _poison(text: str, how: str) -> str:
    """A JSON text made hostile in one of the ways `json.loads` lets through or dies on."""
    return {"none": text, "nan": text.replace("1", "NaN", 1), "inf": text.replace("1", "1e999", 1),
            "digits": text.replace("1", "1" * 5000, 1), "deep": "[" * 5000 + text + "]" * 5000,
            "cut": text[: len(text) // 2]}[how]


HOSTILE_LINES = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ")),
    st.tuples(JSON_VALUES, st.sampled_from(["none", "nan", "inf", "digits", "deep", "cut"]))
      .map(lambda t: _poison(json.dumps(t[0]), t[1]).encode()),
    st.fixed_dictionaries({"prompt": st.one_of(JSON_VALUES, st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool"]), "content": ANY_TEXT}), max_size=2)),
        "completion": st.one_of(ANY_TEXT, JSON_VALUES), "category": st.one_of(ANY_TEXT, JSON_VALUES),
        "completion_label": st.sampled_from(["good", "ok", "bad", "nope"]),
        "rm_score": st.one_of(st.floats(), st.integers())}).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(lines=st.lists(HOSTILE_LINES, min_size=1, max_size=4))
def test_property_every_reader_gives_results_or_located_errors(minimal, tmp_path, lines):
    policy = minimal
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for reader, read in readers(policy).items():
        assert_located(read(path), path, len(lines))  # anything else (an exception) fails the test


# --- the server ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_one_thread(torch_one_thread):
    """conftest's one torch thread; the server's tests also need the server's packages."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")


LIMIT = 512 << 10  # the served app's body limit: room for a hopeless response, small enough to pass quickly


@pytest.fixture(scope="module")
def served(torch_one_thread, minimal, grader):
    """The minimal policy (2 propositions: cheap to grade) with small limits, served."""
    from rbrlang.rewards import RBRReward
    from rbrlang.serve import create_app
    from tests.support.serving import running_server

    app = create_app(RBRReward(minimal, grader), max_batch=8, batch_window_ms=1, max_body=LIMIT,
                     max_samples=4)
    with running_server(app) as (url, _):
        yield url, app


def post(url, body: bytes, **headers):
    from tests.support.serving import http

    return http().post(url + "/get_reward", content=body, timeout=60,
                       headers={"content-type": "application/json", **headers})


def raw_exchange(url: str, head: bytes, body_chunks=()) -> bytes:
    """Send a request's head (and body chunks) on a plain socket; the answer (head
    and body). The server must answer without the rest of the body ever coming."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head)
        for chunk in body_chunks:
            s.sendall(chunk)
        answer = b""
        while data := s.recv(65536):
            answer += data
            head_end = answer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(answer) >= head_end + 4 + length:
                    break
        return answer


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(served):
    url, _ = served
    # 10 GB declared, nothing sent: an answer can only come from the header.
    answer = raw_exchange(url, b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 10000000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"the body declares 10,000,000,000 bytes" in answer


def test_a_chunked_body_is_cut_off_at_the_limit(served):
    url, _ = served
    chunk = b"x" * 8192
    # 560 KiB of chunks and no final chunk: the body never ends, so only the limit ends it.
    answer = raw_exchange(url, b"POST /get_reward HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                          [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 70)
    assert answer.startswith(b"HTTP/1.1 413") and b"the body has more than" in answer


def test_a_body_that_stalls_or_trickles_is_a_408_and_frees_the_server(torch_one_thread, minimal, grader):
    """A client that sends its headers and then stops, or sends a byte now and then, gets a
    408 once the body's deadline passes (one deadline for the whole body: a trickle meets
    any per-chunk timeout), and the server goes on serving."""
    import time

    from rbrlang.rewards import RBRReward
    from rbrlang.serve import create_app
    from tests.support.serving import running_server

    app = create_app(RBRReward(minimal, grader), max_batch=8, batch_window_ms=1, body_timeout_s=0.3)
    head = (b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    with running_server(app) as (url, _):
        stalled = raw_exchange(url, head, [b'{"query": '])  # 10 of the 1,000 bytes, then nothing
        assert stalled.startswith(b"HTTP/1.1 408"), stalled
        assert b"the body was not sent within 0.3 s (10 bytes received)" in stalled

        host, port = url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(head)
            s.setblocking(False)
            answer = b""
            for _ in range(3000):  # a byte every 10 ms until the server answers (0.3 s in, ~30 bytes)
                try:
                    s.sendall(b" ")
                    answer += s.recv(65536)
                except BlockingIOError:
                    pass
                except OSError:  # the server closed the connection after answering
                    break
                if b"\r\n\r\n" in answer:
                    break
                time.sleep(0.01)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert post(url, sample_body(1)).status_code == 200


def sample_body(n: int = 1, completion: str = "Sure.", prompt: str = "Q: hi\n") -> bytes:
    return json.dumps({"query": [prompt + completion] * n, "prompts": [prompt] * n,
                       "labels": [json.dumps({"category": "C-R", "messages": [{"role": "user", "content": "hi"}]})]
                       * n}).encode()


def test_too_many_samples_and_hopeless_lengths_are_refused_before_grading(served, grader):
    url, app = served
    ok = post(url, sample_body(2))
    assert ok.status_code == 200 and len(ok.json()["rewards"]) == 2
    before = grader.stats.graded
    assert before > 0
    r = post(url, sample_body(5))
    assert r.status_code == 413 and r.json()["error"] == "the request has 5 samples; the limit is 4 a request"
    # 60,000 characters: more than 2 x the longest token x 8192 tokens could ever hold.
    r = post(url, sample_body(1, "y" * 60_000 * 4))
    assert r.status_code == 422 and r.json()["sample"] == 0
    assert "characters: more than the grader's context of 8,192 tokens can hold" in r.json()["error"]
    # Under that bound but over the context: the response alone, tokenized once, decides.
    r = post(url, sample_body(1, "word " * 9000))
    assert r.status_code == 422 and "the response alone is" in r.json()["error"] and r.json()["sample"] == 0
    # A short response after a conversation too long: the exact check, before grading.
    long_talk = json.dumps({"query": ["Q: hi\nSure."], "prompts": ["Q: hi\n"], "labels": [json.dumps(
        {"category": "C-R", "messages": [{"role": "user", "content": "word " * 9000}]})]}).encode()
    r = post(url, long_talk)
    assert r.status_code == 422 and r.json()["sample"] == 0
    assert "tokens, more than the grader's context of 8192" in r.json()["error"]
    assert grader.stats.graded == before  # no prompt of those was forwarded


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_json_in_a_body_or_a_label_is_a_4xx(served, name):
    url, _ = served
    text, says = HOSTILE_JSON[name]
    r = post(url, text.encode())
    assert r.status_code == 400 and r.json()["error"].startswith("the body is not JSON we can read")
    assert says in r.json()["error"]
    # The same text as a label (JSON text inside the body's JSON): the label's own parse refuses it.
    r = post(url, json.dumps({"query": ["ab"], "prompts": ["a"], "labels": [text]}).encode())
    if text.startswith("{"):
        assert r.status_code == 422 and "the label looks like a JSON object but cannot be read" in r.json()["error"]
        assert says in r.json()["error"] and r.json()["sample"] == 0
    else:  # not an object: a category name, however odd
        assert r.status_code < 500, r.text


def test_invalid_utf8_and_the_health_grader_is_an_object(served, grader):
    url, _ = served
    r = post(url, b'{"query": ["a\xff"], "prompts": ["a"], "labels": ["C-R"]}')
    assert r.status_code == 400 and "not UTF-8" in r.json()["error"]
    from tests.support.serving import http

    health = http().get(url + "/health", timeout=30).json()
    assert isinstance(health["grader"], dict) and health["grader"]["class"] == "HFGrader"
    assert health["grader"] == {"class": "HFGrader", **json.loads(grader.identity), "context": 8192}
    assert health["limits"] == {"max_body": LIMIT, "max_samples": 4, "body_timeout_s": 60.0}


def test_body_budget_waits_instead_of_holding_more_than_its_total():
    from rbrlang.serve.limits import BodyBudget

    async def run():
        budget = BodyBudget(100)
        await budget.reserve(70)
        second = asyncio.create_task(budget.reserve(50))
        await asyncio.sleep(0.01)
        waited = not second.done()
        await budget.release(70)
        await asyncio.wait_for(second, 5)
        return waited, budget.free

    assert run_coro(run()) == (True, 50)


def run_coro(coro):
    return asyncio.run(coro)


HOSTILE_BODIES = st.one_of(
    st.binary(max_size=80),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.tuples(JSON_VALUES, st.sampled_from(["none", "nan", "inf", "digits", "deep", "cut"]))
      .map(lambda t: _poison(json.dumps({"query": [t[0]], "prompts": ["a"], "labels": ["C-R"]}), t[1]).encode()),
    st.tuples(ANY_TEXT, ANY_TEXT, st.one_of(ANY_TEXT, JSON_VALUES, st.fixed_dictionaries(
        {"category": st.one_of(ANY_TEXT, JSON_VALUES), "messages": st.one_of(JSON_VALUES, st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]), "content": ANY_TEXT}),
            max_size=2))})), st.integers(0, 6))
      .map(lambda t: json.dumps({"query": [t[0] + t[1]] * t[3], "prompts": [t[0]] * t[3],
                                 "labels": [t[2]] * t[3]}).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=HOSTILE_BODIES)
def test_property_hostile_bodies_get_a_4xx_or_rewards_never_a_500(served, body):
    url, _ = served
    r = post(url, body)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str)
    else:
        assert r.status_code == 200 and len(r.json()["rewards"]) == len(json.loads(body)["query"])


# --- serve --rm with a causal LM; the first Ctrl-C ----------------------------------------------------

def test_a_causal_lm_as_reward_model_is_refused_unless_allowed(torch_one_thread, tiny_model_dir, tmp_path):
    from rbrlang.errors import PolicyError
    from rbrlang.integrations.reward_model import HFRewardModel
    from tests.support.tiny_rm import build_tiny_rm

    with pytest.raises(PolicyError, match=r"has no trained score head \(score.weight missing"):
        HFRewardModel.from_pretrained(str(tiny_model_dir))  # a causal LM: its score head would be random
    assert HFRewardModel.from_pretrained(str(tiny_model_dir), allow_untrained_head=True) is not None
    assert HFRewardModel.from_pretrained(str(build_tiny_rm(tmp_path / "rm", tiny_model_dir))) is not None


def test_rbrc_serve_refuses_a_causal_lm_as_rm_in_one_line_before_serving(torch_one_thread, tiny_model_dir, rbrc):
    from tests.support.serving import free_port
    code, _, err = rbrc("serve", SAFETY, "--grader", tiny_model_dir, "--rm", tiny_model_dir, "--port", free_port())
    lines = [x for x in err.splitlines() if x.startswith("rbrc serve:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "has no trained score head" in lines[0] and "--allow-untrained-head to use it anyway" in lines[0]


def test_the_first_ctrl_c_stops_within_the_grace_period_and_exits_130(tiny_model_dir):
    from tests.support.serving import signal_with_a_request_in_flight

    # A batch window of ten minutes holds the request in the server; the grace period is 1 s.
    code, err, answer = signal_with_a_request_in_flight(
        [SAFETY, "--grader", tiny_model_dir, "--batch-window-ms", "600000", "--grace-s", "1", "--log-level", "warning"],
        lambda url: post(url, sample_body(1)), signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    # Past the grace period the request is told, not dropped.
    assert answer["r"].status_code == 503 and "shutting down" in answer["r"].json()["error"]


def test_an_integer_no_float_holds_is_a_located_error_not_an_overflow(rbrc, tmp_path):
    """A label, P(yes) or score of 1 followed by 400 zeros is read as an integer, which no float
    holds: each field's check says so at its place (it was an OverflowError, exit 70, in classify and fit)."""
    from rbrlang.data.jsonl import finite_number

    huge = "1" + "0" * 400
    assert finite_number(int(huge)) is None and finite_number(10 ** 300) == 1e300 and finite_number(True) is None
    folder = tmp_path / "c"
    assert rbrc("compile", write(tmp_path / "p.rbr", MINIMAL), "-o", folder)[0] == 0
    labels = write(tmp_path / "l.jsonl", '{"response_type": "r", "propositions": {"a": ' + huge + ', "b": true}}\n')
    code, _, err = rbrc("classify", folder, "--labels", labels)
    assert code == 1 and "l.jsonl:1:" in err and "error[E0304]" in err and "Traceback" not in err, err
    assert huge not in err  # the number is shown cut short
    comparisons = write(tmp_path / "c.jsonl", json.dumps({
        "prompt": [{"role": "user", "content": "q"}], "completion": "x", "response_type": "r",
        "completion_label": "good", "propositions": {"a": 1, "b": 1}})[:-1] + ', "rm_score": ' + huge + "}\n")
    code, _, err = rbrc("fit", folder, "--data", comparisons)
    assert code == 1 and "c.jsonl:1:" in err and "error[E0306]" in err and "Traceback" not in err, err


def test_the_length_check_measures_the_prompt_with_the_graders_system_message_and_cue(minimal, tiny_grader):
    """The byte frame that decides which samples get the exact check is the prompt as it
    runs: with a long `system` message a sample that fits without it does not, and is
    refused before grading (the frame used to leave the system message and cue out, so
    such a sample passed the check and reached the grader)."""
    from dataclasses import replace

    from rbrlang.integrations.samples import Sample
    from rbrlang.serve.limits import LengthCheck

    grader = tiny_grader(max_length=640)
    system = " ".join(f"rule {i}: judge the final message alone." for i in range(80))
    with_turns = replace(minimal, system=system, prefill="Answer:")
    sample = Sample(conversation=({"role": "user", "content": "Hello there."},), completion="Hi! How can I help?")
    bare = LengthCheck(minimal, grader)
    assert bare._bytes(sample) <= grader.encoder.max_length  # without the system message it passes by its bytes
    frame = bare.frame
    check = LengthCheck(with_turns, grader)
    assert check.frame > frame + len(system)
    ids = grader.encoder.ids([grader.encoder.text(with_turns.render("a", sample.conversation, sample.completion),
                                                  with_turns)])[0]
    assert len(ids) > grader.encoder.max_length  # with the system message it does not fit
    assert LengthCheck(minimal, grader).too_long([sample]) == {}
    assert list(check.too_long([sample])) == [0]
    assert "640" in check.too_long([sample])[0]
