"""Unit tests of the checker's passes, on real files."""
from __future__ import annotations

from pathlib import Path

from rbrlang import diagnostics as dg
from rbrlang.compiler.check import STAGES, check_file

from tests.support.files import write
from tests.support.policies import MINIMAL


def codes(tmp_path: Path, text: str, name: str = "p.rbr") -> list[str]:
    diags = check_file(write(tmp_path / name, text)).diagnostics
    return [d.code for d in diags]


def test_minimal_policy_is_clean(tmp_path):
    result = check_file(write(tmp_path / "p.rbr", MINIMAL))
    policy, diags = result.value, result.diagnostics
    assert diags == () and policy is not None
    assert policy.name == "p"  # no `policy` line: the file's stem
    assert [r.name for r in policy.responses] == ["r"]
    assert policy.class_order == ("good", "ok", "bad")


def test_passes_are_named_in_order():
    assert [name for name, _ in STAGES][:3] == ["collect_names", "resolve_refs", "define_cycles"]


def test_every_compiler_entry_point_returns_or_raises_one_result(tmp_path):
    import pytest

    from rbrlang import compiler
    from rbrlang.errors import CompileError
    from rbrlang.policy import CompiledPolicy

    good = write(tmp_path / "p.rbr", MINIMAL)
    bad = write(tmp_path / "bad.rbr", MINIMAL.replace("good = a and b", "good = a and bb"))
    broken = write(tmp_path / "broken.rbr", "rbr 1\nproposition {\n")
    yaml = write(tmp_path / "p.yaml", "prompt_template: [unclosed\n")
    entry_points = [(compiler.check_policy, bad), (compiler.compile_policy, bad), (compiler.load_target, bad),
                    (compiler.explain_target, bad), (compiler.format_policy, broken),
                    (compiler.format_policy, tmp_path / "gone.rbr"), (compiler.import_yaml, yaml)]
    for entry, path in entry_points:
        result = entry(path)
        assert isinstance(result, compiler.Result) and result.failed and result.value is None, entry
        assert result.diagnostics and all(d.span.file.endswith(path.name) for d in result.diagnostics), entry
        with pytest.raises(CompileError) as exc:  # the raising form holds the same
            result.unwrap()
        assert (exc.value.diagnostics, exc.value.sources) == (list(result.diagnostics), dict(result.sources))
    assert compiler.check_policy(good).unwrap().name == "p"
    assert "policy.json" in compiler.compile_policy(good).unwrap().files
    assert isinstance(compiler.load_target(good).unwrap(), CompiledPolicy)
    assert compiler.explain_target(good).unwrap().startswith("policy p")
    assert compiler.format_policy(good).unwrap() == MINIMAL


def test_did_you_mean_for_misspelt_operand(tmp_path):
    diags = check_file(write(tmp_path / "p.rbr", MINIMAL.replace("good = a and b", "good = a and bb"))).diagnostics
    (d,) = diags
    assert d.code == "E0102" and d.help == "did you mean `b`?"
    assert (d.span.line, d.span.column) == (14, 16)


def test_duplicate_across_import(tmp_path):
    write(tmp_path / "lib.rbr", 'rbr 1\nproposition a {\n  question "A?"\n}\n')
    text = MINIMAL.replace("rbr 1\n", 'rbr 1\nimport "lib.rbr"\n', 1)
    result = check_file(write(tmp_path / "p.rbr", text))
    diags, sources = result.diagnostics, result.sources
    assert [d.code for d in diags] == ["E0101"]
    ((span, label),) = diags[0].related  # the first declaration, in the imported file
    assert (Path(span.file).name, span.line, span.column, label) == ("lib.rbr", 2, 13,
                                                                     "first declared here as a proposition")
    # Shown from its own file's text, under that file's name.
    shown = dg.render_all(diags, sources).split("\n")
    assert shown[-4:-1] == [f"  ::: {span.file}:2:13", "2 | proposition a {", "  |             - " + label]


def test_diamond_import_is_loaded_once(tmp_path):
    write(tmp_path / "base.rbr", 'rbr 1\nproposition a {\n  question "A?"\n}\n')
    write(tmp_path / "x.rbr", 'rbr 1\nimport "base.rbr"\n')
    write(tmp_path / "sub/y.rbr", 'rbr 1\nimport "../base.rbr"\n')
    text = MINIMAL.replace('proposition a {\n  question "Is a?"\n}\n', 'import "x.rbr"\nimport "sub/y.rbr"\n')
    result = check_file(write(tmp_path / "p.rbr", text))
    policy, diags = result.value, result.diagnostics
    assert diags == (), diags
    assert policy.proposition_names == ("a", "b")


def test_define_cycle_reported_once_with_path(tmp_path):
    text = MINIMAL + "define x = y\ndefine y = z\ndefine z = x and a\n"
    diags = check_file(write(tmp_path / "p.rbr", text)).diagnostics
    cycles = [d for d in diags if d.code == "E0103"]
    assert len(cycles) == 1 and "x → y → z → x" in cycles[0].message


def test_self_referencing_define(tmp_path):
    assert "E0103" in codes(tmp_path, MINIMAL + "define x = x or a\n")


def test_partition_counterexample_is_real(tmp_path):
    text = MINIMAL.replace("ok   = a and not b", "ok   = a")
    diags = check_file(write(tmp_path / "p.rbr", text)).diagnostics
    (d,) = diags
    assert d.code == "E0107" and d.notes == ("both hold when a=true, b=true",)


def test_partition_through_defines(tmp_path):
    text = MINIMAL.replace("good = a and b", "good = both").replace("ok   = a and not b", "ok   = a and not both")
    text += "define both = all(a, b)\n"
    assert codes(tmp_path, text) == []


def test_unused_proposition_is_a_warning_and_features_line_uses_it(tmp_path):
    text = MINIMAL + 'proposition c {\n  question "C?"\n}\n'
    assert codes(tmp_path, text) == ["W0105"]
    result = check_file(write(tmp_path / "p.rbr", text.replace("  bad  = not a\n", "  bad  = not a\n  features c\n")))
    policy, diags = result.value, result.diagnostics
    assert diags == () and policy.responses[0].extra_features == ("c",)


def test_matches_and_templates(tmp_path):
    text = MINIMAL + 'proposition e = matches /^\\s*$/\n' + 'template mine "Q: {{ question }} R: {{ response }}"\n'
    text = text.replace('question "Is b?"', 'question "Is b?"\n  template mine')
    text = text.replace("bad  = not a", "bad  = not a or e").replace("good = a and b", "good = a and b and not e") \
        .replace("ok   = a and not b", "ok   = a and not b and not e")
    result = check_file(write(tmp_path / "p.rbr", text))
    policy, diags = result.value, result.diagnostics
    assert diags == (), diags
    kinds = {p.name: (p.kind, p.template) for p in policy.propositions}
    assert kinds == {"a": ("grader", "default"), "b": ("grader", "mine"), "e": ("matches", "")}


def test_template_must_show_response(tmp_path):
    text = MINIMAL + 'template t "Q: {{ question }}"\n'
    text = text.replace('question "Is b?"', 'question "Is b?"\n  template t')
    assert "E0104" in codes(tmp_path, text)


def test_unknown_template_reference(tmp_path):
    text = MINIMAL.replace('question "Is b?"', 'question "Is b?"\n  template nope')
    assert codes(tmp_path, text) == ["E0102"]


def test_route_to_class_is_wrong_kind(tmp_path):
    assert codes(tmp_path, MINIMAL + 'route "X" -> good\n') == ["E0110"]


def test_default_routed_twice(tmp_path):
    assert codes(tmp_path, MINIMAL + "route default -> r\n") == ["E0111"]


def test_rank_peers_and_duplicates(tmp_path):
    # Rank labels are the response's classes (issue 14, D7): free labels were accepted before.
    ok = MINIMAL.replace("  bad  = not a\n", "  bad  = not a\n  rank good > {ok, bad}\n  rank ok > bad\n")
    result = check_file(write(tmp_path / "p.rbr", ok))
    policy, diags = result.value, result.diagnostics
    assert diags == () and policy.responses[0].ranks[0] == (("good",), ("ok", "bad"))
    dup = MINIMAL.replace("  bad  = not a\n", "  bad  = not a\n  rank x > x\n")
    assert codes(tmp_path, dup) == ["E0112"]


def test_imported_file_cannot_route(tmp_path):
    write(tmp_path / "lib.rbr", 'rbr 1\nroute "A" -> r\n')
    assert codes(tmp_path, MINIMAL.replace("rbr 1\n", 'rbr 1\nimport "lib.rbr"\n', 1)) == ["E0122"]


def test_syntax_errors_in_several_items_are_all_reported(tmp_path):
    text = 'rbr 1\nproposition a {\n  question "A?"\n  exmple yes "x"\n}\n\ndefine x = a and and b\n\nclasses a >\n'
    found = codes(tmp_path, text)
    assert len(found) >= 3, found


# --- diagnostics that point at the real mistake (issue 7) ------------------------

def test_misspelt_keywords_get_did_you_mean(tmp_path):
    text = MINIMAL.replace('question "Is a?"', 'questoin "Is a?"').replace("proposition b {", "propositon b {")
    diags = check_file(write(tmp_path / "p.rbr", text)).diagnostics
    assert [(d.code, d.message, d.help, d.span.line, d.span.column) for d in diags] == [
        ("E0010", "unknown keyword `questoin`", "did you mean `question`?", 4, 3),
        ("E0010", "unknown keyword `propositon`", "did you mean `proposition`?", 7, 1),
    ]


def test_misspelt_response_keyword(tmp_path):
    text = MINIMAL.replace("  bad  = not a\n", "  bad  = not a\n  featurs a\n")
    diags = check_file(write(tmp_path / "p.rbr", text)).diagnostics
    (d,) = diags
    assert (d.message, d.help, d.span.line, d.span.column) == (
        "unknown keyword `featurs`", "did you mean `features`?", 17, 3)


def test_doubled_operator_is_reported_at_the_second(tmp_path):
    diags = check_file(write(tmp_path / "p.rbr", MINIMAL + "define x = a or or b\n")).diagnostics
    (d,) = diags
    assert d.code == "E0010" and (d.span.line, d.span.column, d.span.end_column) == (21, 17, 19)
    assert "operand is missing before `or`" in d.help


def test_operator_is_never_an_undefined_name(tmp_path):
    diags = check_file(write(tmp_path / "p.rbr", MINIMAL + "define x = a and or\n")).diagnostics
    (d,) = diags
    assert d.code == "E0010" and "undefined" not in d.message and (d.span.line, d.span.column) == (21, 18)


def test_one_misspelt_declaration_is_one_error(tmp_path):
    text = MINIMAL.replace("proposition a {", "proposition aa {")  # `a` is used three times
    diags = check_file(write(tmp_path / "p.rbr", text)).diagnostics
    (d,) = diags
    assert d.code == "E0102" and d.help == "did you mean `aa`?"
    # The later uses are related places (with their positions), no longer a note.
    assert d.notes == ()
    assert [(s.line, s.column, label) for s, label in d.related] == [(15, 10, "also used here"),
                                                                      (16, 14, "also used here")]


# --- matches: RE2 ------------------------------------------------------------------

def _regex_diags(tmp_path, pattern: str):
    text = MINIMAL + f"proposition e = matches /{pattern}/\n"
    text = text.replace("  bad  = not a\n", "  bad  = not a\n  features e\n")
    diags = check_file(write(tmp_path / "p.rbr", text)).diagnostics
    return diags


def test_pattern_re2_cannot_run_is_located_at_the_construct(tmp_path):
    (d,) = _regex_diags(tmp_path, r"(\w+) \1")
    assert d.code == "E0113" and "backreferences" in d.message and "linear" in d.help
    # `proposition e = matches /` is 25 characters: the pattern starts at column 26.
    assert (d.span.line, d.span.column, d.span.end_column) == (22, 26 + 6, 26 + 8)
    (d,) = _regex_diags(tmp_path, "no(?=pe)")
    assert "lookahead" in d.message and (d.span.column, d.span.end_column) == (26 + 2, 26 + 5)
    (d,) = _regex_diags(tmp_path, "ab[cd")
    assert "unclosed character class" in d.message and (d.span.column, d.span.end_column) == (28, 29)


def test_patterns_are_re2_syntax(tmp_path):
    assert _regex_diags(tmp_path, r"^(a+)+$") == ()  # catastrophic for a backtracking engine; fine for RE2
    assert _regex_diags(tmp_path, r"\p{Greek}+") == ()  # RE2 syntax that Python's `re` rejects


# --- class scores --------------------------------------------------------------------

def test_class_scores_given_or_evenly_spaced(tmp_path):
    result = check_file(write(tmp_path / "p.rbr", MINIMAL))
    policy, diags = result.value, result.diagnostics
    assert diags == () and policy.responses[0].scores == (1.0, 0.5, 0.0)
    text = MINIMAL.replace("  bad  = not a\n", "  bad  = not a\n  scores good 2, ok 2, bad -1.5e0\n")
    result = check_file(write(tmp_path / "p.rbr", text))
    policy, diags = result.value, result.diagnostics
    assert diags == () and policy.responses[0].scores == (2.0, 2.0, -1.5)  # ties are allowed


def test_class_scores_checks(tmp_path):
    def found(line: str) -> list[str]:
        return codes(tmp_path, MINIMAL.replace("  bad  = not a\n", f"  bad  = not a\n  {line}\n"))
    assert found("scores good 1, ok 0.5") == ["E0126"]  # `bad` left out
    assert found("scores good 1, ok 0.5, bad 0, worse 0") == ["E0126"]  # no such class
    assert found("scores good 1, ok 1e400, bad 0") == ["E0125"]  # overflows to infinity
    assert found("scores good 0.5, ok 0.6, bad 0") == ["E0127"]  # a better class below a worse one


# --- decision diagrams that cannot explode (issue 14, D3 and D4) -------------------------

def _pairs_policy(n: int, mention_all_first: bool = False) -> str:
    """`(x0 and y0) or … or (xN-1 and yN-1)` with every x declared before every
    y: 2^n nodes in declaration order, 2 a pair in the order of mention."""
    names = [f"x{i}" for i in range(n)] + [f"y{i}" for i in range(n)]
    pairs = " or ".join(f"(x{i} and y{i})" for i in range(n))
    lines = ["rbr 1"] + [f"proposition {v} = matches /{v}/" for v in names]
    if mention_all_first:  # the order of mention is the declaration order too
        lines.append("define g = " + " or ".join(names))
        pairs = f"g and ({pairs})"
    lines += [f"define f = {pairs}", "classes good > bad", "response r {", "  good = f", "  bad = not f", "}",
              "route default -> r"]
    return "\n".join(lines) + "\n"


def test_pairs_declared_apart_get_small_diagrams(tmp_path):
    from rbrlang.compiler import compile_path
    from rbrlang.policy.format import POLICY_FILE
    comp = compile_path(write(tmp_path / "p.rbr", _pairs_policy(20)))
    (spec,) = comp.checked.responses
    # Before: declaration order only, 2^20 nodes (minutes, gigabytes).
    assert [len(d.nodes) for d in spec.diagrams] == [40, 40]
    assert len(comp.files[POLICY_FILE]) < 100_000
    # The diagrams still index the propositions in declaration order, and mean `f`.
    good = spec.diagrams[0]
    assert good.variables == tuple(f"x{i}" for i in range(20)) + tuple(f"y{i}" for i in range(20))
    values = {v: False for v in good.variables}
    assert not good.evaluate(values) and good.evaluate({**values, "x7": True, "y7": True})
    assert not good.evaluate({**values, "x7": True, "y8": True})


def test_small_diagrams_keep_declaration_order(tmp_path):
    # 6 pairs fit the first budget in declaration order: kept, so that a
    # policy's diagrams (and schema hashes) do not change as it is edited.
    result = check_file(write(tmp_path / "p.rbr", _pairs_policy(6)))
    policy, diags = result.value, result.diagnostics
    assert diags == ()
    good = policy.responses[0].diagrams[0]
    assert len(good.nodes) == 2 ** 7 - 2
    tested_first = good.nodes[good.root - 2][0]
    assert good.variables[tested_first] == "x0"


def test_formula_too_large_in_every_order_is_located(tmp_path, monkeypatch):
    import gc
    import sys
    unraisable = []  # dd checks its nodes when a manager goes: a budget stop must leave them sound
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    diags = check_file(write(tmp_path / "p.rbr", _pairs_policy(16, mention_all_first=True))).diagnostics
    gc.collect()
    assert unraisable == []
    (d,) = diags
    assert d.code == "E0130" and "class `good` of response `r` is too large" in d.message
    assert "50,000 nodes" in d.message and "next to each other" in d.help
    assert (d.span.line, d.span.column) == (38, 3)  # the class that crossed the budget


def test_two_thousand_operands_and_a_two_thousand_define_chain(tmp_path):
    """Python's recursion limit is 1,000: nothing may recurse once an operand,
    a proposition or a define (dd itself once a proposition, so it is given room)."""
    from rbrlang.compiler import compile_path
    from rbrlang.compiler.explain import explain_policy
    from rbrlang.compiler.syntax.parser import parse_source
    from rbrlang.compiler.syntax.printer import format_module
    from rbrlang.source import SourceFile
    levels = chain = 1100  # over the limit, and a parse of 1,100 lines less than 2,000
    text = "rbr 1\n" + "".join(f"proposition p{i} = matches /a{i}/\n" for i in range(levels))
    text += "define d0 = all(" + ", ".join(f"p{i % levels}" for i in range(2000)) + ")\n"
    text += "".join(f"define d{i} = d{i - 1} or p{i % 7}\n" for i in range(1, chain))
    last = f"d{chain - 1}"
    text += f"classes good > bad\nresponse r {{\n  good = {last}\n  bad = not {last}\n}}\nroute default -> r\n"
    path = write(tmp_path / "p.rbr", text)
    comp = compile_path(path)
    assert len(comp.checked.responses[0].diagrams[0].nodes) == 7  # p0 … p6 or-ed, and all(…)
    module = parse_source(SourceFile(path, "p.rbr", text)).value
    formatted = format_module(module)
    assert parse_source(SourceFile(path, "p.rbr", formatted)).value == module
    from rbrlang.compiler import policy_from_files
    assert "good\n    = p0\n" in explain_policy(policy_from_files(comp.files))


# --- templates that would fail only when rendered (issue 14, D4) --------------------------

def _template_policy(body: str) -> str:
    return ('rbr 1\ntemplate t """\nFirst line.\n' + body + '\n{{ response }} {{ question }}\n"""\n'
            'grader {\n  template t\n}\nproposition a {\n  question "A?"\n}\n'
            'classes good > bad\nresponse r {\n  good = a\n  bad = not a\n}\nroute default -> r\n')


import pytest  # noqa: E402


@pytest.mark.parametrize("body, says", [
    ('{% include "other.jinja" %}', "uses `{% include %}`"),
    ('{% from "m.jinja" import x %}', "uses `{% from … import %}`"),
    ('{% extends "base.jinja" %}', "uses `{% extends %}`"),
    ("{{ response.__class__ }}", "attribute '__class__' of 'str' object is unsafe"),
    ("{{ conversation.append(1) }}", "attribute 'append' of 'list' object is unsafe"),
    ("{% for i in range(1000000) %}{% endfor %}", "Range too big"),
    ("{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}", "more than 100,000 steps"),
    ('{% for i in range(99999) %}{{ "0123456789" }}{% endfor %}', "more than 100,000 characters"),
    ('{{ "x" * 100000000 }}', "more than 1,000,000 characters"),
    ('{{ "x" | center(1000000000) }}', "filter `center` would make more than"),  # Jinja folds it while compiling
    ("{{ 10 ** 100000 }}", "more than 10,000 bits"),  # folded, the checker crashed printing it
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "calls itself without end"),
    ("{{ response.nope }}", "'str object' has no attribute 'nope'"),
    ("{{ conversation[1].content }}", "list object has no element 1"),
    ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
])
def test_template_that_fails_to_render_is_refused_at_check(tmp_path, body, says):
    diags = check_file(write(tmp_path / "p.rbr", _template_policy(body))).diagnostics
    (d,) = diags
    assert d.code == "E0131" and says in d.message, d
    assert (d.span.line, d.span.column) == (4, 1)  # the template line it fails at
    assert d.help


def test_templates_that_render_pass(tmp_path):
    body = ("{% for m in conversation %}{{ m.role | upper }}: {{ m.content }}\n{% endfor %}"
            "{% if conversation | length > 1 %}{{ conversation[-2].content }}{% endif %}"
            '{{ "%s-%d" % ("a", 3) }} {{ "=" * 20 }} {{ 2 ** 10 }} {{ 7 % 3 }}')
    diags = check_file(write(tmp_path / "p.rbr", _template_policy(body))).diagnostics
    assert diags == ()


# --- ranks are checked against the classes; an empty policy says so (issue 14, D7, D8) ------

def test_rank_labels_are_the_responses_classes_in_class_order(tmp_path):
    def found(rank: str) -> list:
        diags = check_file(write(tmp_path / "p.rbr", MINIMAL.replace("  bad  = not a\n",
                                                                     f"  bad  = not a\n  {rank}\n"))).diagnostics
        return [(d.code, d.help) for d in diags]
    assert found("rank good > {ok, bad}") == []
    assert found("rank good > okk") == [("E0132", "did you mean `ok`?")]
    assert found("rank good > z") == [("E0132", "rank its classes: `good`, `ok`, `bad`")]
    assert found("rank bad > good") == [("E0133", "rank the classes best to worst, as `classes` does: "
                                                   "`good`, `ok`, `bad`; or reorder `classes` (and the scores)")]
    # Only across groups: peers may be in any order; the first wrong pair of a line is reported.
    assert [c for c, _ in found("rank {bad, good} > ok")] == ["E0133"]
    # A class of the policy that this response gives no formula for.
    text = MINIMAL.replace("classes good > ok > bad", "classes good > ok > bad > worst")
    diags = check_file(write(tmp_path / "q.rbr", text.replace("  bad  = not a\n",
                                                              "  bad  = not a\n  rank bad > worst\n"))).diagnostics
    assert [(d.code, d.message) for d in diags] == [("E0132", "response `r` has no class `worst` to rank")]


def test_a_file_with_no_response_types_compiles_with_a_warning(tmp_path):
    from rbrlang.compiler import compile_policy
    comp = compile_policy(write(tmp_path / "p.rbr", "# a policy, one day\nrbr 1  # header\n"))
    assert not comp.failed  # a warning: the files are generated
    (d,) = comp.diagnostics
    assert d.code == "W0134" and not d.is_error and (d.span.line, d.span.column, d.span.end_column) == (2, 1, 6)
    diags = check_file(write(tmp_path / "lib.rbr", 'rbr 1\nproposition a {\n  question "A?"\n}\n')).diagnostics
    assert "W0134" in [d.code for d in diags]
    result = check_file(write(tmp_path / "m.rbr", MINIMAL))
    policy, diags = result.value, result.diagnostics
    assert diags == ()


def test_explain_proposition_shows_a_neutral_exchange(tmp_path, rbrc):
    """Not the safety policy's lock-picking exchange, whatever the policy (issue 14, D9)."""
    code, out, err = rbrc("explain", write(tmp_path / "p.rbr", MINIMAL), "--proposition", "a")
    assert code == 0, err
    assert "USER: [the user's message]" in out
    assert "[the assistant's reply that the question is about]" in out and "lock" not in out


def test_every_compiler_entry_returns_one_result_shape(tmp_path):
    """Parse, format and check give a `Result` as the entry points do: the
    value (None on errors), the diagnostics and the sources they point into."""
    from rbrlang.compiler import Result, check_policy, format_policy
    from rbrlang.compiler.fmt import format_source
    from rbrlang.compiler.syntax.parser import parse_source
    from rbrlang.source import SourceFile

    good, bad = write(tmp_path / "p.rbr", MINIMAL), write(tmp_path / "q.rbr", "rbr 1\nproposition {\n")
    for path in (good, bad):
        src = SourceFile(path, path.name, path.read_text(encoding="utf-8"))
        results = [parse_source(src), format_source(src), check_file(path), check_policy(path), format_policy(path)]
        assert all(type(r) is Result for r in results)
        assert all(r.failed == (path == bad) and (r.value is None) == (path == bad) for r in results)
        assert all(r.sources[path.name] == src.text for r in results[:2])


def test_grader_chat_turns_check_and_compile(tmp_path):
    """`system` and `prefill` in the grader block reach policy.json and the loaded
    policy; an empty one is E0118, a second one E0119; without them policy.json's
    `grader` row is what it always was."""
    import json

    import rbrlang

    turns = 'rbr 1\ngrader {\n  system "You grade. Reply yes or no."\n  prefill "Answer:"\n}\n' + MINIMAL[6:]
    policy = rbrlang.compile_file(write(tmp_path / "t.rbr", turns))
    assert (policy.system, policy.prefill) == ("You grade. Reply yes or no.", "Answer:")
    assert policy.document.grader.to_json()["prefill"] == "Answer:"
    plain = rbrlang.compile_file(write(tmp_path / "p.rbr", MINIMAL))
    assert plain.document.grader.to_json() == {"template": "default", "yes": ["yes", "Yes"], "no": ["no", "No"]}
    assert (plain.system, plain.prefill) == ("", "")
    # they change P(yes), so they change the features' meaning (fitted weights are refused)
    assert plain.response_type("r").schema_hash != policy.response_type("r").schema_hash
    assert json.loads(json.dumps(policy.document.grader.to_json()))["system"] == policy.system
    assert codes(tmp_path, turns.replace('"Answer:"', '"  "')) == ["E0118"]
    assert codes(tmp_path, turns.replace('  prefill "Answer:"\n', '  system "again"\n')) == ["E0119"]
