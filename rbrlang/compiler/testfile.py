"""Policy unit tests: a `NAME.rbrtest` file beside `NAME.rbr`, parsed and checked
against the policy it tests.

Why a side file and not `test` blocks inside the policy: editing a test must not
change the policy (its source hash, its compiled folder, the fitted files that
record them), and a trainer's policy carries no tests. Why not JSON lines: a test
is a conversation, answers and an expectation that people write and review; the
side file is written in the policy language's own terminals (strings, names,
turns, comments) and every mistake in it is located like a policy's
(file:line:col, caret, help). The grammar is `grammar/rbrtest.lark`.

`load_tests(path)` is the stage's one entry: the test file, the policy it
names (compiled in memory, so a test pins the source, never a stale folder),
and every diagnostic of both, as one `Result`. Running the tests is
`testing.py`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from .. import diagnostics as dg
from ..errors import EscapeError, SourceError
from ..policy.compiled import CompiledPolicy
from ..source import SourceFile, Span, read_source
from .result import Result
from .syntax.errors import to_diagnostic
from .syntax.parser import LANGUAGE_VERSION
from .syntax.strings import literal_value

TEST_SUFFIX = ".rbrtest"
# In a source checkout beside rbr.lark, whose terminals it imports; the wheel carries both in the package.
_CHECKOUT = Path(__file__).resolve().parents[2] / "grammar" / "rbrtest.lark"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Answer:
    proposition: str
    value: bool
    span: Span


@dataclass(frozen=True)
class Expect:
    cls: str
    holds: bool  # False: `expect not CLASS`
    span: Span


@dataclass(frozen=True)
class PolicyTest:
    """One checked test: every name resolved against the policy."""

    name: str
    span: Span  # the test's `test "name"` head
    response_type: str
    conversation: tuple[dict, ...]  # the messages before the completion
    completion: Optional[str]  # None: a logic-only test with no text to grade
    answers: tuple[Answer, ...]  # as written (`yes a, b` / `no c`)
    otherwise: Optional[bool]  # `otherwise yes|no`: every other proposition of the response type
    expects: tuple[Expect, ...]
    reward: Optional[tuple[float, float, Span]]

    def labels(self, needed) -> dict[str, bool]:
        """The answers the test gives the propositions `needed`, `otherwise` filling the rest."""
        given = {a.proposition: a.value for a in self.answers}
        if self.otherwise is not None:
            for name in needed:
                given.setdefault(name, self.otherwise)
        return given


@dataclass(frozen=True)
class TestSuite:
    path: str  # the test file, as diagnostics name it
    policy_path: Path
    policy: CompiledPolicy = field(repr=False)
    checked: object = field(repr=False)  # the CheckedPolicy (examples for `--examples`)
    sources: dict = field(repr=False)  # every file's text: the tests' and the policy's
    tests: tuple[PolicyTest, ...] = ()


@functools.lru_cache(maxsize=None)
def parser() -> Lark:
    """The test-file parser; its terminals are imported from rbr.lark (`%import rbr`)."""
    from importlib import resources

    shipped = resources.files("rbrlang").joinpath("grammar/rbrtest.lark")
    if shipped.is_file():  # an installed wheel: both grammars side by side in the package
        text, folder = shipped.read_text(encoding="utf-8"), str(shipped.parent)
    else:
        text, folder = _CHECKOUT.read_text(encoding="utf-8"), str(_CHECKOUT.parent)
    return Lark(text, parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=False, import_paths=[folder])


def tests_path_for(policy: Path) -> Path:
    """`safety.rbr` -> `safety.rbrtest`, beside it."""
    return policy.with_suffix(TEST_SUFFIX)


def load_tests(path) -> Result[TestSuite]:
    """Parse a test file, compile its policy in memory, and check every test against it."""
    from . import compile_policy
    from ..policy.loading import policy_from_files

    path = Path(path)
    try:
        src = read_source(path)
    except SourceError as exc:
        return Result(None, tuple(exc.diagnostics), exc.sources)
    sources = {src.name: src.text}
    tree, diags = _parse(src)
    if tree is None:
        return Result(None, tuple(diags), sources)
    header, rest = tree.children[0], tree.children[1:]
    version = int(header.children[0])
    if version != LANGUAGE_VERSION:
        return Result(None, (dg.error("E0013", _span(src.name, header.children[0]),
                                      f"unsupported language version {version}",
                                      f"this compiler reads `rbr {LANGUAGE_VERSION}`"),), sources)
    policy_path, policy_span, named = path.with_suffix(".rbr"), Span.point(src.name), False
    if rest and isinstance(rest[0], Tree) and rest[0].data == "tests_for":
        tok = rest[0].children[0]
        value, ok = _string(src.name, tok, diags)
        if not ok:
            return Result(None, tuple(diags), sources)
        policy_path, policy_span, named, rest = path.parent / value, _span(src.name, tok), True, rest[1:]
    if not policy_path.is_file():
        diags.append(dg.error(
            "E0400", policy_span, f"the policy these tests are for, `{policy_path}`, is not a file",
            "name it on the second line, relative to this file: `tests for \"safety.rbr\"`" if not named else
            "give the policy's path relative to this test file"))
        return Result(None, tuple(diags), sources)
    compiled = compile_policy(policy_path)
    sources.update(compiled.sources)
    if compiled.failed:
        return Result(None, tuple(diags) + tuple(compiled.diagnostics), sources)
    policy = policy_from_files(compiled.value.files)
    tests = []
    seen: dict[str, Span] = {}
    for node in rest:
        name, head = _string(src.name, node.children[0], [])[0], _head_span(src.name, node)  # (its escapes: below)
        if name in seen:
            diags.append(dg.error("E0406", head, f"a test called {name!r} is already in this file",
                                  "give each test its own name: the summary and --junit report tests by name",
                                  related=[(seen[name], "first here")]))
            continue
        seen[name] = head
        test = _check_test(policy, src.name, node, diags)
        if test is not None:
            tests.append(test)
    if not rest:
        diags.append(dg.warning("W0408", Span.point(src.name, src.text.count("\n") + 1), "the file has no tests",
                                'add one: test "a short refusal is ideal" { category "C-R" … expect ideal }'))
    suite = TestSuite(src.name, policy_path, policy, compiled.value.checked, sources, tuple(tests))
    diags = list(compiled.diagnostics) + diags  # the policy's own warnings are worth seeing here too
    return Result(None if dg.has_errors(diags) else suite, tuple(dg.normalise(diags)), sources)


def _parse(src: SourceFile):
    diags: list[dg.Diagnostic] = []
    try:
        return parser().parse(src.text), diags
    except UnexpectedInput as exc:
        diags.append(to_diagnostic(exc, parser(), src))
        return None, diags


def _span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _string(file: str, tok: Token, diags: list) -> tuple[str, bool]:
    try:
        return literal_value(str(tok))[0], True
    except EscapeError as exc:
        diags.append(dg.error("E0014", _span(file, tok), f"invalid escape `{exc.text}` in string",
                              'escapes are \\n \\t \\r \\\\ \\" \\0 and \\u{hex}'))
        return "", False


def _head_span(file: str, node: Tree) -> Span:
    """`test "name"`: where a test's messages point."""
    meta, name = node.meta, node.children[0]
    return Span(file, meta.line, meta.column, name.end_line, name.end_column, meta.start_pos, name.end_pos)


def _check_test(policy: CompiledPolicy, file: str, node: Tree, diags: list) -> Optional[PolicyTest]:
    name, _ = _string(file, node.children[0], diags)  # a bad escape is an error below
    head = _head_span(file, node)
    items = node.children[1:]
    before = len(diags)

    def error(code, span, message, help, related=()):
        diags.append(dg.error(code, span, message, help, related=related))

    def warn(code, span, message, help):
        diags.append(dg.warning(code, span, message, help))

    # --- which response type --------------------------------------------------------------
    categories = [i for i in items if i.data == "category"]
    responses = [i for i in items if i.data == "response"]
    picks = categories + responses
    rt_name = None
    if len(picks) > 1:
        first = picks[0]
        for extra in picks[1:]:
            error("E0402", _span(file, extra.children[0]), "a test names its response type once",
                  "keep one `category \"…\"` or `response NAME` line",
                  related=[(_span(file, first.children[0]), "first given here")])
    if not picks:
        error("E0402", head, f"test {name!r} does not say which response type judges it",
              f"add `category \"C-R\"` (routed as the policy routes it) or `response NAME` "
              f"(one of {', '.join(policy.response_types)})")
    elif picks[0].data == "response":
        tok = picks[0].children[0]
        if str(tok) in policy.response_types:
            rt_name = str(tok)
        else:
            near = dg.did_you_mean(str(tok), policy.response_types)
            error("E0401", _span(file, tok), f"policy `{policy.name}` has no response type `{tok}`",
                  near or f"its response types are {', '.join(policy.response_types)}")
    else:
        tok = picks[0].children[0]
        category, readable = _string(file, tok, diags)
        if readable:
            rt_name = policy.route(category)
            if rt_name is None:
                near = dg.did_you_mean(category, policy.routes)
                error("E0402", _span(file, tok), f"category {category!r} routes to no response type in policy "
                      f"`{policy.name}`", near or "name a routed category, or the response type with `response NAME`")
    rt = policy.response_types.get(rt_name) if rt_name else None

    # --- the conversation -----------------------------------------------------------------
    turns = []
    for item in (i for i in items if i.data == "turn"):
        role, tok = item.children
        text, _ = _string(file, tok, diags)
        if str(role) not in ROLES:
            error("E0403", _span(file, role), f"a test's turns are {', '.join(ROLES)}, not `{role}`",
                  "say why in a comment (`# …`) instead")
            continue
        turns.append((str(role), text, _span(file, role)))
    completion, conversation = None, ()
    if turns:
        if turns[-1][0] != "assistant":
            error("E0403", turns[-1][2], "a test's last turn is the completion under test: an `assistant` turn",
                  'end the test\'s conversation with `assistant "…"`')
        else:
            completion = turns[-1][1]
            conversation = tuple({"role": r, "content": t} for r, t, _ in turns[:-1])

    # --- answers ----------------------------------------------------------------------------
    answers: list[Answer] = []
    given: dict[str, Answer] = {}
    for item in (i for i in items if i.data in ("answer_yes", "answer_no")):
        value = item.data == "answer_yes"
        for tok in item.children:
            span, prop = _span(file, tok), str(tok)
            if prop not in policy.proposition_names:
                near = dg.did_you_mean(prop, policy.proposition_names)
                error("E0401", span, f"policy `{policy.name}` has no proposition `{prop}`",
                      near or "answer the policy's propositions (`rbrc explain` lists them)")
                continue
            if prop in given:
                twice = "twice" if given[prop].value == value else "both yes and no"
                error("E0404", span, f"`{prop}` is answered {twice}", "answer each proposition once",
                      related=[(given[prop].span, "first answered here")])
                continue
            if rt is not None and prop not in rt.propositions:
                warn("W0407", span, f"response type `{rt.name}` does not use `{prop}`: its answer changes no class",
                     f"drop it, or judge the test under a response type that uses it")
            given[prop] = Answer(prop, value, span)
            answers.append(given[prop])
    others = [i for i in items if i.data in ("otherwise_yes", "otherwise_no")]
    for extra in others[1:]:
        error("E0404", _item_span(file, extra), "a test has one `otherwise` line", "keep one")
    otherwise = (others[0].data == "otherwise_yes") if others else None

    # --- expectations ---------------------------------------------------------------------
    expects = []
    for item in (i for i in items if i.data in ("expect", "expect_not")):
        tok = item.children[0]
        cls, span = str(tok), _span(file, tok)
        if rt is not None and cls not in rt.classes:
            near = dg.did_you_mean(cls, rt.classes)
            error("E0401", span, f"response type `{rt.name}` has no class `{cls}`",
                  near or f"its classes are {', '.join(rt.classes)}")
            continue
        expects.append(Expect(cls, item.data == "expect", span))
    positive = [e for e in expects if e.holds]
    for extra in positive[1:]:
        if extra.cls != positive[0].cls:
            error("E0409", extra.span, f"the test expects both `{positive[0].cls}` and `{extra.cls}`: a completion "
                  "is in one class", "keep one `expect CLASS`; write the others as `expect not CLASS`",
                  related=[(positive[0].span, "first expected here")])
    for e in expects:
        if not e.holds and any(p.cls == e.cls for p in positive):
            error("E0409", e.span, f"the test expects `{e.cls}` and `not {e.cls}`", "keep one of them")
    rewards = [i for i in items if i.data == "reward"]
    reward = None
    for extra in rewards[1:]:
        error("E0405", _item_span(file, extra), "a test has one `reward LOW to HIGH` line", "keep one")
    if rewards:
        lo_tok, hi_tok = rewards[0].children
        lo, hi = float(lo_tok), float(hi_tok)
        span = _item_span(file, rewards[0])
        if not (lo <= hi) or lo != lo or abs(lo) == float("inf") or abs(hi) == float("inf"):
            error("E0405", span, f"the reward range {lo_tok} to {hi_tok} is empty or not finite",
                  "write the lower bound first: `reward 0.5 to 1`")
        else:
            reward = (lo, hi, span)
    if not expects and not rewards and not answers:
        error("E0402", head, f"test {name!r} checks nothing", "add `expect CLASS`, `expect not CLASS`, "
              "`reward LOW to HIGH`, or answers for the grader to agree with")
    if any(d.is_error for d in diags[before:]) or rt is None:
        return None
    return PolicyTest(name, head, rt.name, conversation, completion, tuple(answers), otherwise, tuple(expects),
                      reward)


def _item_span(file: str, item: Tree) -> Span:
    m = item.meta
    return Span(file, m.line, m.column, m.end_line, m.end_column, m.start_pos, m.end_pos)
