"""Properties: robustness on any input, formatter meaning, exact probabilities,
and the partition proof against brute force."""
from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rbrlang.policy import logic
from rbrlang.compiler.proofs import Space
from rbrlang.compiler.check import check_file
from rbrlang.compiler.fmt import format_source
from rbrlang.source import SourceFile
from rbrlang.compiler.syntax.printer import format_module
from rbrlang.compiler.syntax.parser import parse_source

from tests.support.files import ROOT
from tests.support.strategies import BIG_VARS, VARS, _pairs, formula_text, formulas, fuzz_policies, modules, numbers

SAFETY = (ROOT / "policies/safety.rbr").read_text()
_work = Path(tempfile.mkdtemp(prefix="rbr-props-"))
shutil.copytree(ROOT / "policies", _work / "policies")


def common(n: int):
    return settings(deadline=None, max_examples=n, suppress_health_check=[HealthCheck.too_slow])


def _only_diagnostics(text: str) -> None:
    path = _work / "policies" / "mutant.rbr"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    checked = check_file(path)  # must not raise
    policy, diags = checked.value, checked.diagnostics
    assert policy is not None or any(d.is_error for d in diags)
    result = format_source(SourceFile(path, "mutant.rbr", text))
    assert (result.value is None) == bool(result.diagnostics)


@common(200)
@given(st.text(max_size=300), st.booleans())
def test_arbitrary_text_gives_only_diagnostics(text, with_header):
    _only_diagnostics(("rbr 1\n" if with_header else "") + text)


mutation = st.tuples(st.sampled_from(["delete", "insert", "replace"]), st.integers(0, len(SAFETY) - 1),
                     st.integers(1, 40), st.sampled_from(list('{}()"\'/#=>,\n andornot x_\\') + ["\"\"\"", "define", "rank"]))


@common(150)
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_safety_policy_gives_only_diagnostics(mutations):
    text = SAFETY
    for kind, at, length, piece in mutations:
        at = min(at, len(text))
        if kind == "delete":
            text = text[:at] + text[at + length:]
        elif kind == "insert":
            text = text[:at] + piece + text[at:]
        else:
            text = text[:at] + piece + text[at + len(piece):]
    _only_diagnostics(text)


@common(300)
@given(modules)
def test_formatting_keeps_meaning(module):
    text = format_module(module)
    parsed = parse_source(SourceFile(Path("g.rbr"), "g.rbr", text))
    assert parsed.diagnostics == (), (text, parsed.diagnostics)
    assert parsed.value == module
    assert format_module(parsed.value) == text  # idempotent


@common(300)
@given(formulas(), st.lists(st.floats(0, 1), min_size=len(VARS), max_size=len(VARS)))
def test_diagram_probability_equals_enumeration(f, ps):
    space = Space(VARS)
    dd = space.export(space.build(f))
    probs = dict(zip(VARS, ps))
    exact = dd.probability([probs[v] for v in VARS])
    assert abs(exact - logic.brute_force_probability(f, probs)) < 1e-9
    for bits in itertools.product((False, True), repeat=len(VARS)):
        values = dict(zip(VARS, bits))
        assert dd.evaluate(values) == logic.evaluate(f, values)


@common(150)
@given(st.lists(formulas(VARS[:3]), min_size=1, max_size=4))
def test_partition_check_agrees_with_brute_force(class_formulas):
    names = [f"c{i}" for i in range(len(class_formulas))]
    text = "rbr 1\n" + "".join(f'proposition {v} {{\n  question "{v}?"\n}}\n' for v in VARS[:3])
    text += "classes " + " > ".join(names) + "\nresponse resp {\n"
    text += "".join(f"  {n} = {formula_text(f)}\n" for n, f in zip(names, class_formulas)) + "}\n"
    path = _work / "partition.rbr"
    path.write_text(text)
    diags = check_file(path).diagnostics
    found = {d.code for d in diags if d.is_error}

    rows = [dict(zip(VARS[:3], bits)) for bits in itertools.product((False, True), repeat=3)]
    holds = [[logic.evaluate(f, row) for f in class_formulas] for row in rows]
    expect = set()
    if any(sum(h) > 1 for h in holds):
        expect.add("E0107")
    if any(sum(h) == 0 for h in holds):
        expect.add("E0108")
    if any(not any(h[i] for h in holds) for i in range(len(class_formulas))):
        expect.add("E0109")
    assert found == expect, (text, diags)
    # Counterexamples are real: each reported assignment does what it says.
    for d in diags:
        if d.code in ("E0107", "E0108") and "=" in d.notes[0]:
            pairs = d.notes[0].split(" when ")[1].split(", ")
            row = {k: v == "true" for k, v in (p.split("=") for p in pairs)}
            full = {v: row.get(v, False) for v in VARS[:3]}
            count = sum(logic.evaluate(f, full) for f in class_formulas)
            assert (count > 1) if d.code == "E0107" else (count == 0)


@common(100)
@given(st.lists(numbers, min_size=3, max_size=3))
def test_class_score_checks_agree_with_their_definition(scores):
    """E0125 exactly when a score is not finite; E0127 exactly when, among the
    finite ones, a better class scores below a worse one; and policy.json gets
    the values."""
    import json
    import math

    from rbrlang.compiler import compile_path

    text = ("rbr 1\nproposition p {\n  question \"p?\"\n}\nproposition q {\n  question \"q?\"\n}\n"
            "classes c0 > c1 > c2\nresponse r {\n  c0 = p and q\n  c1 = p and not q\n  c2 = not p\n"
            "  scores " + ", ".join(f"c{i} {n.text}" for i, n in enumerate(scores)) + "\n}\n")
    path = _work / "scores.rbr"
    path.write_text(text)
    diags = check_file(path).diagnostics
    found = {d.code for d in diags if d.is_error}
    values = [n.value for n in scores]
    finite = [v for v in values if math.isfinite(v)]
    assert ("E0125" in found) == (len(finite) < len(values)), (text, diags)
    assert ("E0127" in found) == any(b > a for a, b in zip(finite, finite[1:])), (text, diags)
    assert found <= {"E0125", "E0127"}, (text, diags)
    if not found:
        doc = json.loads(compile_path(path).files["policy.json"])
        assert [c["score"] for c in doc["response_types"][0]["classes"]] == values


@common(20)
@given(fuzz_policies)
@example(_pairs(18, BIG_VARS, False))  # every x before every y: 2^18 nodes before the order heuristic
@example(_pairs(16, BIG_VARS, True))  # no order tried is good: E0130
def test_every_fuzzed_policy_compiles_small_or_says_why(text):
    """Compile of any policy in the corpus stays under the node budget (about a
    second of diagram work at most, measured as nodes, not time) and 10 MB of
    `policy.json`, or fails with located diagnostics (issue 14)."""
    from rbrlang.compiler import compile_path
    from rbrlang.compiler.proofs import NODE_BUDGET
    from rbrlang.errors import CompileError
    path = _work / "fuzzed.rbr"
    path.write_text(text)
    try:
        comp = compile_path(path)
    except CompileError as exc:
        assert exc.diagnostics and all(d.span.line >= 1 and d.help for d in exc.diagnostics)
        assert {d.code for d in exc.diagnostics if d.is_error} <= {"E0109", "E0130"}, exc
        return
    assert len(comp.files["policy.json"]) < 10_000_000
    assert sum(len(d.nodes) for r in comp.checked.responses for d in r.diagrams) <= NODE_BUDGET


_COMMENTED = """rbr 1
grader {
  yes "yes"
}
proposition a {
  question "Is a?"
  example yes {
    user "Hi"
  }
}
proposition b {
  question "Is b?"
}
proposition c = matches /c/
define chain =
  a
  and b and c
  and not c
define call = all(a,
                  b, c)
classes good > ok > bad
response r {
  good = a and b
  ok   = a
         and not b
  bad  = not a
  rank good > ok > bad
}
route default -> r
"""


@common(150)
@given(st.lists(st.tuples(st.integers(0, _COMMENTED.count("\n") - 1), st.booleans()), max_size=8))
def test_comments_anywhere_keep_their_order_and_are_stable(spots):
    """A comment at the end of any line or on its own line between any two
    lines: fmt keeps every comment in order (no E0900) and is idempotent."""
    lines = _COMMENTED.split("\n")
    for k, (at, own) in enumerate(sorted(set(spots), reverse=True)):
        if own:
            lines.insert(at + 1, f"# own {at}")
        else:
            lines[at] += f"  # after {at}"
    text = "\n".join(lines)
    src = SourceFile(Path("c.rbr"), "c.rbr", text)
    result = format_source(src)
    assert result.value is not None, (text, result.diagnostics)
    again = format_source(SourceFile(Path("c.rbr"), "c.rbr", result.value))
    assert again.value == result.value, (text, result.value)
