"""Hypothesis strategies: random syntax trees and formulas."""
from __future__ import annotations

from hypothesis import strategies as st

from rbrlang.policy import logic
from rbrlang.compiler.syntax import ast

KEYWORDS = {
    "rbr", "policy", "import", "grader", "template", "yes", "no", "proposition", "question",
    "example", "matches", "define", "classes", "response", "rank", "features", "scores", "route",
    "default", "and", "or", "not", "all", "any", "none", "system", "user", "assistant", "because",
}

names = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
idents = names.map(ast.Ident)
strs = texts.map(ast.Str)


def exprs(leaves=idents):
    base = leaves.map(ast.Ref)
    return st.recursive(base, lambda sub: st.one_of(
        sub.map(ast.Not),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: ast.And(tuple(xs))),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: ast.Or(tuple(xs))),
        st.tuples(st.sampled_from(["all", "any", "none"]), st.lists(sub, min_size=1, max_size=3))
          .map(lambda t: ast.Call(t[0], tuple(t[1]))),
    ), max_leaves=8)


turns = st.tuples(st.sampled_from(["system", "user", "assistant", "because"]), strs) \
    .map(lambda t: ast.Turn(t[0], t[1]))
examples = st.one_of(
    st.tuples(idents, strs).map(lambda t: ast.Example(t[0], (ast.Turn("assistant", t[1]),), True)),
    st.tuples(idents, st.lists(turns, max_size=3)).map(lambda t: ast.Example(t[0], tuple(t[1]), False)),
)
prop_items = st.one_of(strs.map(ast.Question), idents.map(ast.PropTemplate), examples)
# Numbers as an author may write them: signs, decimals, exponents, overflow (`1e999`).
numbers = st.from_regex(r"[+-]?(?:[0-9]{1,4}(?:\.[0-9]{0,3})?|\.[0-9]{1,3})(?:[eE][+-]?[0-9]{1,3})?",
                        fullmatch=True).map(ast.Num)
class_scores = st.lists(st.tuples(idents, numbers).map(lambda t: ast.ClassScore(*t)), min_size=1, max_size=4) \
    .map(lambda xs: ast.ClassScores(tuple(xs)))
regexes = st.from_regex(r"[a-z^$.*+?\\\\ ]{1,10}", fullmatch=True).filter(
    lambda s: not s.endswith("\\") and "\\\\" not in s.replace("\\\\", ""))

items = st.one_of(
    st.tuples(idents, st.none() | strs).map(lambda t: ast.PolicyDecl(*t)),
    strs.map(ast.Import),
    st.lists(st.one_of(
        idents.map(lambda i: ast.GraderSetting("template", (i,))),
        st.tuples(st.sampled_from(["yes", "no"]), st.lists(strs, min_size=1, max_size=3))
          .map(lambda t: ast.GraderSetting(t[0], tuple(t[1]))),
    ), max_size=3).map(lambda xs: ast.Grader(tuple(xs))),
    st.tuples(idents, strs).map(lambda t: ast.Template(*t)),
    st.tuples(idents, st.lists(prop_items, max_size=4)).map(lambda t: ast.Proposition(t[0], tuple(t[1]))),
    st.tuples(idents, regexes, st.sampled_from(["", "i", "ms"])).map(lambda t: ast.Matches(*t)),
    st.tuples(idents, exprs()).map(lambda t: ast.Define(*t)),
    st.lists(idents, min_size=1, max_size=4).map(lambda xs: ast.Classes(tuple(xs))),
    st.tuples(idents, st.lists(st.one_of(
        st.tuples(idents, exprs()).map(lambda t: ast.ClassRule(*t)),
        st.lists(st.lists(idents, min_size=1, max_size=2).map(tuple), min_size=1, max_size=3)
          .map(lambda gs: ast.Rank(tuple(gs))),
        st.lists(idents, min_size=1, max_size=3).map(lambda xs: ast.ExtraFeatures(tuple(xs))),
        class_scores,
    ), max_size=4)).map(lambda t: ast.Response(t[0], tuple(t[1]))),
    st.tuples(st.none() | st.lists(strs, min_size=1, max_size=3).map(tuple), idents)
      .map(lambda t: ast.Route(*t)),
)
modules = st.lists(items, max_size=6).map(lambda xs: ast.Module(1, tuple(xs)))

VARS = ("p", "q", "r", "s", "t")


def formulas(variables=VARS):
    base = st.sampled_from(variables).map(logic.Ref)
    return st.recursive(base, lambda sub: st.one_of(
        sub.map(logic.Not),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: logic.And(tuple(xs))),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: logic.Or(tuple(xs))),
    ), max_leaves=10)


# --- whole policies for the compile-size property (issue 14) ----------------------------

def formula_text(f) -> str:
    if isinstance(f, logic.Ref):
        return f.name
    if isinstance(f, logic.Not):
        return f"not ({formula_text(f.operand)})"
    word = " and " if isinstance(f, logic.And) else " or "
    return "(" + word.join(formula_text(o) for o in f.operands) + ")"


def _policy_text(declared, defines, good, ok=None) -> str:
    lines = ["rbr 1"] + [f"proposition {v} = matches /{v}/" for v in declared]
    lines += [f"define {name} = {body}" for name, body in defines]
    rules = [f"  good = {good}", f"  bad = not ({good})"] if ok is None else \
        [f"  good = ({good}) and ({ok})", f"  ok = ({good}) and not ({ok})", f"  bad = not ({good})"]
    lines += ["classes good > ok > bad", "response r {", *rules, "}", "route default -> r"]
    return "\n".join(lines) + "\n"


def _pairs(n: int, declared, mention_all_first: bool) -> str:
    """`(x0 and y0) or …` whose decision diagram is 2^n nodes in a bad order:
    declared in `declared`'s order, and mentioned in that order first if
    `mention_all_first` (then no order the checker tries is good)."""
    names = [v for v in declared if int(v[1:]) < n]
    pairs = " or ".join(f"(x{i} and y{i})" for i in range(n))
    defines = [("g", " or ".join(names))] if mention_all_first else []
    return _policy_text(names, defines, f"g and ({pairs})" if mention_all_first else pairs)


BIG_VARS = tuple(f"{c}{i}" for c in "xy" for i in range(18))
fuzz_policies = st.one_of(
    st.builds(_pairs, st.integers(2, 18), st.permutations(BIG_VARS), st.booleans()),
    st.builds(lambda fs, order: _policy_text(order, [], *map(formula_text, fs)),
              st.lists(formulas(BIG_VARS[:12]), min_size=1, max_size=2), st.permutations(BIG_VARS[:12])),
)
