"""Running policy unit tests (`rbrc test`): the results, the summary and JUnit XML.

Two modes, one set of tests (`testfile.py`):

- logic only (no grader): a test whose answers cover every proposition its
  response type uses is classified by the policy itself (`CompiledPolicy.classify`);
  the others are skipped, and say which answers they lack. Fast, deterministic: CI.
- graded: the caller grades every test's completion (P(yes) `[N, P]`); each named
  answer is checked against the grader's within a tolerance, the class is the
  most probable one (`class_probabilities`), the reward the policy's own.

`example_cases` lists every proposition's own `example yes/no` texts, for
`--examples`: the caller grades each under its proposition alone, and
`example_results` says per proposition how often the judge agrees.

Nothing here grades or evaluates a class formula itself: the policy does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence
from xml.etree import ElementTree as ET

from .. import diagnostics as dg
from ..diagnostics import Span
from .testfile import PolicyTest, TestSuite

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class TestResult:
    test: PolicyTest
    status: str  # PASS, FAIL or SKIP
    failures: tuple[dg.Diagnostic, ...] = ()  # located at the test's lines
    reason: str = ""  # why skipped
    cls: Optional[str] = None  # the class the completion got
    reward: Optional[float] = None


@dataclass(frozen=True)
class ExampleCase:
    proposition: str
    label: bool  # the author's answer
    conversation: tuple
    response: str
    span: Span  # the `example` line


@dataclass(frozen=True)
class ExampleResult:
    case: ExampleCase
    p_yes: float

    def agrees(self, tolerance: float) -> bool:
        return _agrees(self.case.label, self.p_yes, tolerance)


@dataclass(frozen=True)
class Run:
    suite: TestSuite
    results: tuple[TestResult, ...]
    examples: tuple[ExampleResult, ...] = ()
    tolerance: float = 0.5
    grader: str = ""  # what graded, or "" for logic only
    diagnostics: tuple[dg.Diagnostic, ...] = field(default=())  # every failure, in file order

    @property
    def failed(self) -> bool:
        return any(r.status == FAIL for r in self.results) or any(
            not e.agrees(self.tolerance) for e in self.examples)


def _agrees(label: bool, p_yes: float, tolerance: float) -> bool:
    """`yes` holds when P(yes) >= 1 - tolerance, `no` when P(yes) <= tolerance
    (the default 0.5: the grader's side of one half)."""
    return p_yes >= 1 - tolerance if label else p_yes <= tolerance


def _fail(test: PolicyTest, span: Span, message: str, help: str, notes=()) -> dg.Diagnostic:
    return dg.error("E0420", span, f"test {test.name!r}: {message}", help, notes=notes)


def _shown(answers: dict) -> str:
    yes = [k for k, v in answers.items() if v]
    no = [k for k, v in answers.items() if not v]
    return f"yes: {', '.join(yes) or '(none)'}; no: {', '.join(no) or '(none)'}"


def _check_outcome(policy, test: PolicyTest, cls: str, reward: float, basis: str) -> list[dg.Diagnostic]:
    """The class and reward expectations against what the policy gave."""
    fails = []
    for e in test.expects:
        if e.holds and cls != e.cls:
            fails.append(_fail(test, e.span, f"expected class `{e.cls}`, got `{cls}`",
                               "fix the class formulas, or the test's answers if they are wrong", [basis]))
        if not e.holds and cls == e.cls:
            fails.append(_fail(test, e.span, f"expected any class but `{e.cls}`, got it",
                               "fix the class formulas, or the test's answers if they are wrong", [basis]))
    if test.reward is not None:
        lo, hi, span = test.reward
        if not lo <= reward <= hi:
            fails.append(_fail(test, span, f"expected a reward from {lo:g} to {hi:g}, got {reward:.4g} "
                                           f"(class `{cls}`)", "fix the class scores, or the range", [basis]))
    return fails


def _matched(policy, test: PolicyTest) -> dict[str, bool]:
    """`matches` propositions: their pattern decides, on the test's completion."""
    if test.completion is None:
        return {}
    return {p.name: policy.matches(p.name, test.completion) for p in policy.propositions if not p.graded}


def run_logic(suite: TestSuite, test: PolicyTest) -> TestResult:
    """One test, its class from its own answers (no grader)."""
    policy = suite.policy
    rt = policy.response_type(test.response_type)
    labels = test.labels(rt.propositions)
    fails: list[dg.Diagnostic] = []
    for name, value in _matched(policy, test).items():
        if name in labels and labels[name] != value:
            answer = next((a for a in test.answers if a.proposition == name), None)
            fails.append(_fail(test, answer.span if answer else test.span,
                               f"`{name}` is a `matches` proposition: its pattern says "
                               f"{'yes' if value else 'no'} for this completion",
                               "fix the answer, or the pattern"))
        labels.setdefault(name, value)
    missing = [p for p in rt.propositions if p not in labels]
    if missing:
        named = ", ".join(missing[:4]) + (f", … ({len(missing)} in all)" if len(missing) > 4 else "")
        return TestResult(test, FAIL if fails else SKIP, tuple(fails),
                          f"no answer for {named} (add them, `otherwise no`, or run with --grader)")
    labels = {p: labels[p] for p in rt.propositions}
    cls = policy.classify(rt.name, labels)
    # With certain answers the reward before any fit is the class's score (policy/scoring.py).
    reward = rt.scores[rt.classes.index(cls)]
    fails += _check_outcome(policy, test, cls, reward, f"answers {_shown(labels)}")
    return TestResult(test, FAIL if fails else PASS, tuple(fails), cls=cls, reward=reward)


def run_graded(suite: TestSuite, test: PolicyTest, p_yes: Sequence[float], tolerance: float) -> TestResult:
    """One test from the grader's P(yes) (a row in `policy.proposition_names` order)."""
    import torch

    policy = suite.policy
    rt = policy.response_type(test.response_type)
    row = dict(zip(policy.proposition_names, (float(v) for v in p_yes)))
    fails = []
    for a in test.answers:
        if not _agrees(a.value, row[a.proposition], tolerance):
            fails.append(_fail(test, a.span, f"the grader answers `{a.proposition}` with P(yes) = "
                                             f"{row[a.proposition]:.3f}; the test says {'yes' if a.value else 'no'}",
                               "fix the test's answer, the proposition's question or examples, or the grader; "
                               f"--tolerance {tolerance:g} is in use"))
    probs = torch.tensor([list(row.values())], dtype=torch.float64)
    classes = policy.class_probabilities(rt.name, probs)[0]
    cls = rt.classes[int(classes.argmax())]
    reward = float(policy.reward(rt.name, policy.features(rt.name, probs))[0])
    basis = "grader's P(yes): " + ", ".join(f"{p} {row[p]:.2f}" for p in rt.propositions)
    fails += _check_outcome(policy, test, cls, reward, basis)
    return TestResult(test, FAIL if fails else PASS, tuple(fails), cls=cls, reward=reward)


def example_cases(suite: TestSuite) -> list[ExampleCase]:
    """Every graded proposition's examples, each with the place it is written."""
    from ..source import SourceFile
    from .syntax import ast
    from .syntax.parser import parse_source

    places: dict[str, list[Span]] = {}
    for name, text in suite.sources.items():
        if name == suite.path:
            continue
        module = parse_source(SourceFile(suite.policy_path, name, text)).module
        for item in (module.items if module else ()):
            if isinstance(item, ast.Proposition):
                places[item.name.text] = [i.span for i in item.items if isinstance(i, ast.Example)]
    cases = []
    for prop in suite.checked.propositions:
        if not prop.graded:
            continue
        spans = places.get(prop.name, [])
        for k, ex in enumerate(prop.examples):
            spoken = [(r, t) for r, t in ex.turns if r != "because"]
            if not spoken:
                continue
            response = spoken[-1][1]
            conversation = tuple({"role": r, "content": t} for r, t in spoken[:-1])
            span = spans[k] if k < len(spans) else Span.point(str(suite.policy_path))
            cases.append(ExampleCase(prop.name, ex.label == "yes", conversation, response, span))
    return cases


def example_failures(run: Run) -> list[dg.Diagnostic]:
    out = []
    for e in run.examples:
        if not e.agrees(run.tolerance):
            said = "yes" if e.case.label else "no"
            out.append(dg.error("E0421", e.case.span, f"the grader answers this example of `{e.case.proposition}` "
                                f"with P(yes) = {e.p_yes:.3f}; it is written as `example {said}`",
                                "make the question clearer, choose a clearer example, or a stronger grader"))
    return out


# --- reports ------------------------------------------------------------------------------

def summary(run: Run) -> str:
    """The readable report: one line per test, then the examples' agreement per proposition, then counts."""
    lines = [f"{run.suite.path}: {len(run.results)} test{'s' * (len(run.results) != 1)} of policy "
             f"`{run.suite.policy.name}`, " + (f"graded by {run.grader}" if run.grader else "logic only")]
    for r in run.results:
        where = f"{r.test.span.file}:{r.test.span.line}"
        got = f" → {r.cls} ({r.reward:.3g})" if r.cls is not None else ""
        why = f": {r.reason}" if r.status == SKIP else ""
        lines.append(f"  {r.status.upper():4} {where} {r.test.name}{got}{why}")
    if run.examples:
        lines.append(f"examples (agreement with the grader, tolerance {run.tolerance:g}):")
        by_prop: dict[str, list[ExampleResult]] = {}
        for e in run.examples:
            by_prop.setdefault(e.case.proposition, []).append(e)
        width = max(len(p) for p in by_prop)
        for prop, results in by_prop.items():
            agree = sum(e.agrees(run.tolerance) for e in results)
            lines.append(f"  {prop.ljust(width)}  {agree}/{len(results)}")
        total = sum(e.agrees(run.tolerance) for e in run.examples)
        lines.append(f"  {'all'.ljust(width)}  {total}/{len(run.examples)}")
    counts = {s: sum(r.status == s for r in run.results) for s in (PASS, FAIL, SKIP)}
    lines.append(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"
                 + (f"; {sum(not e.agrees(run.tolerance) for e in run.examples)} example"
                    f"{'s' * (sum(not e.agrees(run.tolerance) for e in run.examples) != 1)} disagree"
                    if run.examples else ""))
    return "\n".join(lines) + "\n"


def junit(runs: Sequence[Run]) -> str:
    """JUnit XML: a testsuite per test file (its tests, then one case per proposition's examples)."""
    root = ET.Element("testsuites")
    for run in runs:
        suite = ET.SubElement(root, "testsuite", name=run.suite.path)
        fails = skips = cases = 0
        for r in run.results:
            cases += 1
            case = ET.SubElement(suite, "testcase", name=r.test.name, classname=run.suite.policy.name,
                                 file=r.test.span.file, line=str(r.test.span.line))
            if r.status == FAIL:
                fails += 1
                node = ET.SubElement(case, "failure", message=r.failures[0].message)
                node.text = dg.render_all(r.failures, run.suite.sources)
            elif r.status == SKIP:
                skips += 1
                ET.SubElement(case, "skipped", message=r.reason)
        by_prop: dict[str, list[ExampleResult]] = {}
        for e in run.examples:
            by_prop.setdefault(e.case.proposition, []).append(e)
        for prop, results in by_prop.items():
            cases += 1
            case = ET.SubElement(suite, "testcase", name=f"examples of {prop}", classname=run.suite.policy.name,
                                 file=results[0].case.span.file, line=str(results[0].case.span.line))
            bad = [e for e in results if not e.agrees(run.tolerance)]
            if bad:
                fails += 1
                node = ET.SubElement(case, "failure", message=f"{len(bad)} of {len(results)} examples disagree")
                node.text = "\n".join(f"{e.case.span.file}:{e.case.span.line}: P(yes) {e.p_yes:.3f}, written "
                                      f"{'yes' if e.case.label else 'no'}" for e in bad)
        suite.set("tests", str(cases))
        suite.set("failures", str(fails))
        suite.set("skipped", str(skips))
        suite.set("errors", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
