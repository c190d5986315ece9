"""CompiledPolicy: loading, rendering, classification and exact probabilities."""
from __future__ import annotations

import json
import re

import pytest
import torch

import rbrlang
from rbrlang.policy import logic
from rbrlang.policy import PolicyError, load_policy
from rbrlang.policy.patterns import compile_pattern, strip_verbose

REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}

from tests.support.files import SAFETY, write
from tests.support.policies import MINIMAL, edit_document


def test_render_uses_transcript_and_response(safety):
    conv = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "How do I pick a lock?"}]
    prompt = safety.render("apology", conv, "Sorry, I can't help with that.")
    assert "SYSTEM: Be nice.\nUSER: How do I pick a lock?" in prompt
    assert "ASSISTANT: Sorry, I can't help with that." in prompt
    assert prompt.startswith(safety.static_prefix("apology"))
    assert safety.static_prefix("apology").endswith("The conversation:\n")
    assert "Question: Does the final assistant message contain one short apology" in prompt


def test_render_rejects_bad_conversation(safety):
    with pytest.raises(ValueError, match="message 0"):
        safety.render("apology", [{"role": "user"}], "x")
    with pytest.raises(ValueError, match="a conversation is a list of messages, not a string"):
        safety.render("apology", "How do I pick a lock?", "x")  # not one message per character
    with pytest.raises(PolicyError, match="no proposition"):
        safety.render("apologee", [], "x")


def test_sandbox_blocks_python_internals(tmp_path):
    text = MINIMAL + 'template evil "{{ response.__class__.__mro__ }} {{ response }}"\n'
    text = text.replace('question "Is b?"', 'question "Is b?"\n  template evil')
    # Refused when the policy compiles (issue 14, D4), and still at render.
    from rbrlang.errors import CompileError
    with pytest.raises(CompileError, match=r"E0131.*'__class__' of 'str' object is unsafe"):
        rbrlang.compile_file(write(tmp_path / "p.rbr", text))
    from jinja2.exceptions import SecurityError
    from rbrlang.policy.rendering import environment
    with pytest.raises(SecurityError):
        environment().from_string("{{ response.__class__.__mro__ }}").render(conversation=[], response="x")


def test_response_type_names_are_normalised(safety):
    assert safety.response_type("Hard Refuse").name == "hard_refuse"
    assert safety.response_type("safe-refuse-1").name == "safe_refuse_1"
    with pytest.raises(PolicyError, match="unknown response type"):
        safety.response_type("refuse")
    with pytest.raises(PolicyError, match="unknown response type `hard_refusal`.*; did you mean `hard_refuse`\\?"):
        safety.response_type("hard_refusal")


def test_routes(safety):
    assert safety.route("C-R") == "hard_refuse"
    assert safety.route("SH-R2") == "safe_refuse_2"
    assert safety.route("something new") == "comply"


def test_classify_boolean_labels(safety):
    labels = {p: False for p in safety.proposition_names}
    labels.update(apology=True, inability_to_comply=True)
    assert safety.classify("hard_refuse", labels) == "ideal"
    labels["judgement"] = True
    assert safety.classify("hard_refuse", labels) == "minimum_acceptable_style"
    labels["disallowed_content"] = True
    assert safety.classify("hard_refuse", labels) == "disallowed"
    with pytest.raises(PolicyError, match="missing proposition label"):
        safety.classify("hard_refuse", {"apology": True})


def test_class_probabilities_exact_and_normalised(safety):
    torch.manual_seed(0)
    probs = torch.rand(16, len(safety.propositions), dtype=torch.float64)
    doc = json.loads((SAFETY / "policy.json").read_text())
    defines = {d["name"]: logic.from_json(d["expr"]) for d in doc["defines"]}
    for rt in doc["response_types"]:
        out = safety.class_probabilities(rt["name"], probs)
        assert out.shape == (16, len(rt["classes"]))
        torch.testing.assert_close(out.sum(1), torch.ones(16, dtype=torch.float64))
        for i in range(3):
            values = dict(zip(safety.proposition_names, probs[i].tolist()))
            for j, c in enumerate(rt["classes"]):
                f = logic.expand(logic.from_json(c["expr"]), defines)
                support = logic.variables(f)
                if len(support) <= 16:
                    assert out[i, j].item() == pytest.approx(logic.brute_force_probability(f, values), abs=1e-12)


def test_features_follow_schema(safety):
    probs = torch.full((2, len(safety.propositions)), 0.5)
    rt = safety.response_type("comply")
    feats = safety.features("comply", probs)
    assert feats.shape == (2, len(rt.features))
    assert rt.features[: len(rt.propositions)] == rt.propositions
    with pytest.raises(PolicyError, match="shape"):
        safety.class_probabilities("comply", torch.zeros(2, 3))


def test_matches_propositions(tmp_path):
    text = MINIMAL + "proposition e = matches /^\\s*$/\n" + "proposition shout = matches /HELP/i\n"
    text = text.replace("route default -> r\n", "route default -> r\n")
    policy = rbrlang.compile_file(write(tmp_path / "p.rbr", text))
    assert policy.matches("e", "  \n") and not policy.matches("e", "x")
    assert policy.matches("shout", "please help")
    with pytest.raises(PolicyError):
        policy.render("e", [], "")


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(PolicyError, match="compile the policy first"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text('{"format": 99}')
    with pytest.raises(PolicyError, match="recompile"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text('{"format": 1, "propositions": []}')
    with pytest.raises(PolicyError, match="malformed"):
        load_policy(tmp_path)


# --- values a trainer passes in: probabilities ------------------------------------------------------------------
@pytest.mark.parametrize("value", [1.7, -0.5, float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("method", ["class_probabilities", "features"])
def test_values_that_are_not_probabilities_are_refused(safety, value, method):
    probs = torch.full((4, len(safety.propositions)), 0.5)
    probs[2, 5] = value
    name = safety.proposition_names[5]
    with pytest.raises(PolicyError, match=rf"\[2, 5\].*`{name}`") as info:
        getattr(safety, method)("comply", probs)
    assert "[0, 1]" in str(info.value)


def test_bad_probability_report_counts_the_others_and_hints_at_logits(safety):
    probs = torch.full((3, len(safety.propositions)), 0.5, dtype=torch.float64)
    probs[1, 0], probs[2, 3] = 3.0, -2.0
    with pytest.raises(PolicyError, match=r"\[1, 0\].*1 more.*sigmoid"):
        safety.class_probabilities("comply", probs.tolist())


def test_boolean_inputs_are_probabilities_zero_and_one(safety):
    import numpy as np
    torch.manual_seed(1)
    truth = torch.rand(6, len(safety.propositions)) > 0.5
    expected = safety.class_probabilities("hard_refuse", truth.to(torch.float32))
    for given in (truth, truth.numpy(), truth.tolist(), truth.to(torch.int64)):
        out = safety.class_probabilities("hard_refuse", given)
        torch.testing.assert_close(out, expected.to(out.dtype))
        assert safety.features("hard_refuse", given).shape == (6, len(safety.response_type("hard_refuse").features))
    assert truth.numpy().dtype == np.bool_ and isinstance(truth.tolist()[0][0], bool)
    # a hard 0/1 assignment puts all the mass on the class `classify` gives
    labels = dict(zip(safety.proposition_names, truth[0].tolist()))
    best = safety.response_type("hard_refuse").classes.index(safety.classify("hard_refuse", labels))
    assert expected[0, best].item() == 1.0


def test_wrong_shapes_name_the_expected_shape_and_column_order(safety):
    n = len(safety.propositions)
    order = ", ".join(safety.proposition_names)
    for given in (torch.zeros(2, 3), torch.zeros(n), torch.zeros(2, n, 1), [[0.5] * n, [0.5] * (n - 1)]):
        with pytest.raises(PolicyError) as info:
            safety.class_probabilities("comply", given)
        message = str(info.value)
        assert f"[N, {n}]" in message and order in message and "proposition_names" in message
    with pytest.raises(PolicyError, match=r"\[1, %d\]" % n):  # one completion: a batch of one
        safety.features("comply", torch.zeros(n))
    with pytest.raises(PolicyError, match="numbers"):
        safety.class_probabilities("comply", [["yes"] * n])
    with pytest.raises(PolicyError, match="real"):
        safety.class_probabilities("comply", torch.zeros(1, n, dtype=torch.complex64))


def test_an_empty_batch_gives_empty_outputs(safety):
    rt = safety.response_type("comply")
    out = safety.class_probabilities("comply", torch.zeros(0, len(safety.propositions)))
    assert out.shape == (0, len(rt.classes))
    assert safety.features("comply", torch.zeros(0, len(safety.propositions))).shape == (0, len(rt.features))


# --- values a trainer passes in: labels -----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["no", "yes", 0.7, 1, 0, None])
def test_classify_takes_booleans_only(safety, value):
    labels = {p: False for p in safety.proposition_names}
    labels["apology"] = value
    with pytest.raises(PolicyError, match=rf"`apology`.*{re.escape(repr(value))}.*True or False"):
        safety.classify("hard_refuse", labels)


def test_classify_takes_numpy_booleans(safety):
    import numpy as np
    labels = {p: np.bool_(False) for p in safety.proposition_names}
    labels.update(apology=np.bool_(True), inability_to_comply=True)
    assert safety.classify("hard_refuse", labels) == "ideal"


def test_classify_names_unknown_propositions(safety):
    labels = {p: False for p in safety.proposition_names}
    labels["apolgy"] = labels.pop("apology")
    with pytest.raises(PolicyError, match=r"unknown proposition `apolgy`.*did you mean `apology`"):
        safety.classify("hard_refuse", labels)
    labels = {p: False for p in safety.proposition_names}
    labels["zzz"] = True
    with pytest.raises(PolicyError, match=r"unknown proposition `zzz`") as info:
        safety.classify("hard_refuse", labels)
    assert "did you mean" not in str(info.value)
    with pytest.raises(PolicyError, match="mapping"):
        safety.classify("hard_refuse", [True] * len(safety.propositions))
    with pytest.raises(PolicyError, match="did you mean `apology`"):
        safety.render("apologie", [], "x")


# --- loading a compiled folder ----------------------------------------------------------------------------------


def test_load_policy_takes_the_folder_or_its_policy_json(safety_dir):
    by_folder, by_file = load_policy(safety_dir), load_policy(safety_dir / "policy.json")
    assert by_folder == by_file and by_file.name == "safety"
    assert load_policy(str(safety_dir / "policy.json")).proposition_names == by_folder.proposition_names


def test_load_policy_explains_a_source_path(tmp_path):
    source = write(tmp_path / "p.rbr", MINIMAL)
    for path in (source, tmp_path / "missing.rbr"):
        with pytest.raises(PolicyError, match=rf"policy source.*`rbrc compile {re.escape(str(path))} -o"):
            load_policy(path)


def test_load_policy_refuses_other_paths(tmp_path):
    notes = write(tmp_path / "notes.txt", "hello\n")
    with pytest.raises(PolicyError, match=r"notes\.txt.*is a file.*policy\.json"):
        load_policy(notes)
    with pytest.raises(PolicyError, match=r"nowhere.*no such folder"):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(PolicyError, match=r"not a compiled policy folder \(it has no policy\.json\)"):
        load_policy(tmp_path)  # a folder of something else: compiling into it would be refused
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match=r"policy\.json.*not found.*rbrc compile"):
        load_policy(tmp_path / "empty")  # an empty folder: compile into it
    with pytest.raises(PolicyError, match=r"path is empty"):
        load_policy("")  # an unset shell variable, not the working folder


def test_a_folder_of_compiled_policies_is_named(tmp_path):
    (tmp_path / "compiled/p").mkdir(parents=True)
    (tmp_path / "compiled/p/policy.json").write_text("{}")
    with pytest.raises(PolicyError, match=r"did you mean .*compiled/p\?"):
        load_policy(tmp_path / "compiled")


def test_load_policy_refuses_an_edited_template(safety_dir):
    template = safety_dir / "templates" / "apology.jinja"
    template.write_text(template.read_text() + "Answer yes.\n")
    with pytest.raises(PolicyError, match=r"apology\.jinja.*edited after compiling.*recompile"):
        load_policy(safety_dir)
    template.unlink()
    with pytest.raises(PolicyError, match=r"apology\.jinja.*missing"):
        load_policy(safety_dir)


def test_load_policy_refuses_template_paths_outside_the_folder(safety_dir):
    def edit(doc):
        doc["propositions"][0]["template"] = "../../etc/passwd"
    edit_document(safety_dir, edit)
    with pytest.raises(PolicyError, match=r"etc/passwd.*not a path inside the compiled folder"):
        load_policy(safety_dir)


def test_load_policy_refuses_a_template_without_its_hash(safety_dir):
    def edit(doc):
        next(p for p in doc["propositions"] if p["kind"] == "grader").pop("template_sha256")
    edit_document(safety_dir, edit)
    with pytest.raises(PolicyError, match="template_sha256"):
        load_policy(safety_dir)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "not a compiled policy"),
    ('{"propositions": []}', "not a compiled policy"),
    ('{"format": "1", "propositions": []}', "not a compiled policy"),
    ('{"format": 99, "propositions": []}', r"format 99.*newer rbrlang"),
    ('{"format": 0, "propositions": []}', r"format 0.*recompile"),
    ('{"format": 1, "propositions": []}', "malformed"),
])
def test_load_policy_refuses_malformed_documents(safety_dir, text, message):
    (safety_dir / "policy.json").write_text(text)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(safety_dir / "policy.json")
    assert str(safety_dir / "policy.json") in str(info.value)


def test_load_policy_reports_a_wrong_format_before_reading_templates(safety_dir):
    edit_document(safety_dir, lambda doc: doc.update(format=2))
    (safety_dir / "templates" / "apology.jinja").unlink()
    with pytest.raises(PolicyError, match="format 2"):
        load_policy(safety_dir)


# --- `matches` at runtime: RE2 ----------------------------------------------------------------------------------
def _matching(tmp_path, **patterns):
    """A policy with one `matches` proposition per NAME="PATTERN/FLAGS"."""
    lines = "".join(f"proposition {name} = matches /{pattern}\n" for name, pattern in patterns.items())
    return rbrlang.compile_file(write(tmp_path / "m.rbr", MINIMAL + lines))


def test_matches_cannot_backtrack_catastrophically(tmp_path):
    # Python's `re` takes ~2^n steps here (33 characters: hours); RE2 is linear in the text.
    policy = _matching(tmp_path, nested="^(a+)+$/")
    assert not policy.matches("nested", "a" * 100_000 + "!")
    assert policy.matches("nested", "a" * 100_000)


@pytest.mark.parametrize("pattern, texts", [
    ("hello/i", ["HeLLo there", "help"]),
    ("^b/m", ["a\nb", "ab"]),
    ("^b/", ["a\nb", "b"]),
    ("a.b/s", ["a\nb", "ab"]),
    ("a.b/", ["a\nb", "axb"]),
    ("a$/m", ["a\nb", "ab"]),
    ("^ a \\d+ # a number/x", ["a12", "a 12", " a12"]),
    ("a\\ b [ ] \\#/x", ["a b #", "ab#", "a b  #"]),
    ("x{1, 2}/x", ["x{1,2}", "xx"]),
    ("\\0 1/x", ["\x001", "\x01"]),
    ("^ HELLO \\s+ world $/imx", ["x\nhello  World\ny", "hello world!"]),
    ("(?: a | b ) + c/xs", ["abac", "a c"]),
])
def test_matches_flags_mean_what_they_mean_in_python(tmp_path, pattern, texts):
    body, flags = pattern.rsplit("/", 1)
    policy = _matching(tmp_path, p=pattern)
    expected = re.compile(body, sum((REGEX_FLAGS[f] for f in flags), 0))
    for text in texts:
        assert policy.matches("p", text) == bool(expected.search(text)), (pattern, text)
    assert any(policy.matches("p", t) for t in texts) and not all(policy.matches("p", t) for t in texts)


def test_matches_dollar_is_the_end_of_the_text(tmp_path):
    # RE2's `$` (without `m`) is the very end; Python's also matched before a final newline.
    policy = _matching(tmp_path, p="done\\.$/")
    assert policy.matches("p", "done.") and not policy.matches("p", "done.\n")


def test_matches_takes_text_a_strict_encoder_refuses(tmp_path):
    policy = _matching(tmp_path, p="ok/")
    assert policy.matches("p", "\ud800 ok") and not policy.matches("p", "\udcff")
    with pytest.raises(PolicyError, match="string"):
        policy.matches("p", b"ok")


def test_a_pattern_re2_cannot_run_is_refused_when_loading(safety_dir):
    def edit(doc):
        doc["propositions"].append({"name": "twice", "kind": "matches", "pattern": "(a)\\1", "flags": ""})
    edit_document(safety_dir, edit)
    with pytest.raises(PolicyError, match=r"policy\.json: proposition `twice`.*\(a\)\\1.*invalid escape.*recompile"):
        load_policy(safety_dir)


def test_strip_verbose_agrees_with_python(tmp_path):
    cases = [(r"a  # comment with [ and {", "a"), (r"[]# ] +", "#  "), (r"\x41 1", "A1"), (r"\101 1", "xA1"),
             (r"(?P<w> x ) y", "xy"), (r"[^]a] b", "]b cb"), (r"a {2}", "aa"), (r"\\ a", "\\a")]
    for pattern, text in cases:
        python = re.search(pattern, text, re.VERBOSE)
        ours = compile_pattern(pattern, "x").search(text)
        assert (python and python.group()) == (ours and ours.group()), (pattern, strip_verbose(pattern))
    # RE2's own units stay whole: a POSIX class inside a class, \Q…\E quoting
    assert strip_verbose("[[:alpha:] ]+ x") == "[[:alpha:] ]+x"
    assert strip_verbose("\\Qa b\\E c") == "\\Qa b\\Ec"
    with pytest.raises(PolicyError, match="flag"):
        compile_pattern("a", "q")


# --- the typed policy.json contract (policy/format.py) --------------------------------------------------------
def test_the_rows_read_back_exactly_what_codegen_wrote():
    """Every key and value of the committed document survives from_json → to_json, in order:
    the rows are the whole contract, and the loader and codegen share them."""
    from rbrlang.policy.format import PolicyDocument, dump_document

    raw = (SAFETY / "policy.json").read_bytes()
    doc = PolicyDocument.from_json(json.loads(raw))
    assert dump_document(doc.to_json()) == raw
    policy = load_policy(SAFETY)
    assert policy.document == doc
    assert [rt.scores for rt in policy.response_types.values()] == [(1.0, 0.75, 0.5, 0.25, 0.0)] * 4


def _set(*path, value=None, drop=False):
    """An edit that sets (or drops) doc[path[0]][path[1]]…."""
    def edit(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        if drop:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, where", [
    (_set("policy", value=7), r"\(policy: expected a string, got 7\)"),
    (_set("propositions", 2, "kind", value="oracle"), r"\(propositions\[2\]\.kind: expected `grader` or `matches`"),
    (_set("propositions", 0, "name", drop=True), r"\(propositions\[0\]\.name: missing\)"),
    (_set("grader", "yes", value=[]), r"\(grader\.yes: expected a non-empty list of strings, got \[\]\)"),
    (_set("response_types", 1, "classes", 2, "dd", "nodes", 0, value=[0, 5, 1]),
     r"response_types\[1\]\.classes\[2\]\.dd\.nodes\[0\]: expected \[variable, low, high\]"),
    (_set("response_types", 0, "classes", 0, "dd", "root", value=10 ** 6), r"classes\[0\]\.dd\.root: expected a node id"),
    (_set("response_types", 0, "classes", 1, "score", value=True), r"classes\[1\]\.score: expected a finite number"),
    (_set("response_types", 0, "classes", 1, "score", value=None), "some classes have a score and some do not"),
    (_set("response_types", 0, "classes", 0, "expr", value={"xor": ["a"]}), r"classes\[0\]\.expr: expected a formula"),
    (_set("response_types", 2, "features", value=["apology"]),
     r"response_types\[2\]\.features: expected its `propositions`, then its classes, in that order"),
    (lambda doc: [doc["response_types"][3][k].__setitem__(0, "apologie") for k in ("propositions", "features")],
     r"response_types\[3\]\.propositions: no proposition `apologie`"),
    (_set("routes", "C-R", value="hard_refusal"), r"\(routes: no response type `hard_refusal`\)"),
    (_set("default_route", value="nowhere"), r"\(default_route: no response type `nowhere`\)"),
    (lambda doc: doc["propositions"].append(doc["propositions"][0]), r"\(propositions: `apology` twice\)"),
])
def test_a_malformed_document_names_the_row_and_key(safety_dir, edit, where):
    edit_document(safety_dir, edit)
    with pytest.raises(PolicyError, match=where) as info:
        load_policy(safety_dir)
    message = str(info.value)
    assert message.startswith(f"{safety_dir / 'policy.json'}: malformed compiled policy (") and \
        message.endswith("; recompile it") and "\n" not in message


def test_a_document_from_before_class_scores_gets_evenly_spaced_ones(safety_dir):
    def unscored(doc):
        for rt in doc["response_types"]:
            for c in rt["classes"]:
                del c["score"]
    edit_document(safety_dir, unscored)
    rt = load_policy(safety_dir).response_type("comply")
    assert rt.scores == (1.0, 0.75, 0.5, 0.25, 0.0)


def test_a_formula_nested_too_deeply_is_a_policy_error(safety_dir):
    edit_document(safety_dir, _set("defines", 0, "expr", value="DEEP"))
    path = safety_dir / "policy.json"
    path.write_text(path.read_text().replace('"DEEP"', '{"not": ' * 100_000 + '"apology"' + "}" * 100_000))
    with pytest.raises(PolicyError, match=r"policy\.json: .*nested too deeply.*recompile"):
        load_policy(safety_dir)


def test_the_fitted_files_are_read_only_when_asked_for(safety_dir):
    (safety_dir / "weights.json").write_text('{"format": 1, "policy": "other", "response_types": {}}')
    (safety_dir / "calibration.json").write_text("{broken")
    with pytest.raises(PolicyError, match="calibration.json: not valid JSON"):
        load_policy(safety_dir)
    with pytest.raises(PolicyError, match="weights.json: fitted for policy `other`"):
        load_policy(safety_dir, calibration="ignore")
    policy = load_policy(safety_dir, weights="ignore", calibration="ignore")
    assert dict(policy.weights) == {} and policy.calibration is None
    with pytest.raises(ValueError, match="weights='skip'; expected 'check' or 'ignore'"):
        load_policy(safety_dir, weights="skip")


def test_a_template_failing_only_on_real_data_is_a_policy_error(tmp_path):
    """The checker renders templates on samples (E0131); a branch only real data reaches can
    still hit the sandbox: a PolicyError naming the proposition (exit 1), never exit 70."""
    import dataclasses

    import rbrlang
    from rbrlang.errors import PolicyError

    policy = rbrlang.compile_file(write(tmp_path / "m.rbr", MINIMAL))
    bomb = dataclasses.replace(policy.propositions[0],
                               template="{% if response == 'boom' %}{{ 10 ** 1000000 }}{% endif %}ok")
    policy = dataclasses.replace(policy, propositions=(bomb,) + policy.propositions[1:])
    conv = [{"role": "user", "content": "hi"}]
    assert policy.render("a", conv, "fine") == "ok"
    with pytest.raises(PolicyError, match=r"grader prompt of `a` cannot be rendered .*SecurityError"):
        policy.render("a", conv, "boom")
