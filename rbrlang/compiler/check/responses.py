"""Passes over classes, response types, ranks and class scores, including the partition proof."""
from __future__ import annotations

import dataclasses
import math
import re

from ... import diagnostics as dg
from ...policy.scoring import default_scores
from ..proofs import NODE_BUDGET, Space, TooLarge, appearance_order, partition_problems
from ...source import Span
from ..syntax import ast
from .context import Context
from .defines import to_formula
from .graphs import cycles
from .model import ResponseSpec


def check_has_responses(ctx: Context) -> None:
    """A policy without response types compiles to one with nothing to grade
    or reward: said, at the header, rather than compiled in silence. A
    warning: a file just begun, or shared propositions checked on their own,
    are not wrong, only not a policy yet."""
    if ctx.of(ast.Response):
        return
    root = ctx.program.units[0]
    span = root.module.span
    line = root.source.text.split("\n")[span.line - 1]
    end = re.match(r"\s*rbr\s+\S+", line)  # the header, without a comment after it
    header = Span(span.file, span.line, span.column, span.line, (end.end() if end else len(line)) + 1)
    props = sum(isinstance(i, (ast.Proposition, ast.Matches)) for _, i in ctx.items)
    ctx.warning("W0134", header,
                "this file declares no response types: it compiles to a policy with nothing to grade",
                "add `classes`, a `response` with a formula for each class, and a `route`; a file of "
                "shared propositions is imported by a policy (`import \"…\"`), not compiled on its own",
                [f"it has {props} proposition{'s' if props != 1 else ''} and no response type"])


def class_order(ctx: Context) -> tuple[str, ...]:
    decl = ctx.one(ast.Classes, "`classes`")
    if decl is None:
        if ctx.of(ast.Response):
            first = ctx.of(ast.Response)[0]
            ctx.error("E0123", first.span, "response types need a `classes` declaration",
                      "declare the classes best to worst: `classes ideal > acceptable > bad`")
        return ()
    return tuple(i.text for i in decl.names)


def check_class_rules(ctx: Context, order: tuple[str, ...]) -> None:
    for resp in ctx.of(ast.Response):
        seen: dict[str, ast.ClassRule] = {}
        rules = [i for i in resp.items if isinstance(i, ast.ClassRule)]
        if not rules:
            ctx.error("E0123", resp.name.span, f"response `{resp.name.text}` gives no class formulas",
                      "add one line per class: `ideal = …`")
        for rule in rules:
            name = rule.name.text
            if name not in order:
                if ctx.seen_before("E0106", rule.name):  # the same misspelling in another response
                    continue
                hint = ctx.suggest(name, "class")
                ctx.error("E0106", rule.name.span, f"`{name}` is not declared in `classes`",
                          hint or f"add `{name}` to the `classes` line, in its place best to worst")
            elif name in seen:
                ctx.error("E0124", rule.name.span, f"class `{name}` given twice in response `{resp.name.text}`",
                          "join the two formulas with `or`")
            seen[name] = rule


def check_scores(ctx: Context, order: tuple[str, ...]) -> None:
    """`scores` lines: finite numbers, one for each class of the response and
    no other, a better class never below a worse one."""
    for resp in ctx.of(ast.Response):
        lines = [i for i in resp.items if isinstance(i, ast.ClassScores)]
        if not lines:
            continue
        rt = resp.name.text
        classes = [c for c in order if c in {i.name.text for i in resp.items if isinstance(i, ast.ClassRule)}]
        given: dict[str, ast.ClassScore] = {}
        meant: set[str] = set()  # classes a misspelt entry stands for: not reported missing too
        for entry in (e for line in lines for e in line.entries):
            name = entry.name.text
            if name in given:
                ctx.error("E0126", entry.name.span, f"class `{name}` is scored twice in response `{rt}`",
                          "keep one score for each class")
                continue
            if name not in classes:
                if name in order:
                    ctx.error("E0126", entry.name.span, f"response `{rt}` has no class `{name}` to score",
                              f"score only the classes it gives formulas for: {_list(classes)}")
                else:
                    guess = dg.closest(name, classes)
                    meant.add(guess or "")
                    ctx.error("E0126", entry.name.span, f"`{name}` is not a class of response `{rt}`",
                              f"did you mean `{guess}`?" if guess else f"its classes are {_list(classes)}")
                continue
            given[name] = entry
            if not math.isfinite(entry.score.value):
                ctx.error("E0125", entry.score.span, f"the score of `{name}` is not a finite number",
                          "write a number such as `0.75`")
        missing = [c for c in classes if c not in given]
        unmeant = [c for c in missing if c not in meant]
        if unmeant:
            ctx.error("E0126", lines[0].span, f"the scores of response `{rt}` leave out {_list(unmeant)}",
                      "give every class of the response a score, or write no `scores` line "
                      "for evenly spaced ones (1 for the best class to 0 for the worst)")
        if missing:
            continue
        better = None  # the worst class so far with a finite score
        for c in classes:
            if not math.isfinite(given[c].score.value):
                continue  # reported above
            if better is not None and given[c].score.value > given[better].score.value:
                ctx.error("E0127", given[c].score.span,
                          f"class `{c}` scores {given[c].score.text}, more than the better class "
                          f"`{better}` ({given[better].score.text})",
                          "a class earlier in `classes` is better and must score at least as much; "
                          "change the numbers")
            better = c


def _list(names) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def response_specs(ctx: Context, order: tuple[str, ...]) -> list[ResponseSpec]:
    specs = []
    for resp in ctx.of(ast.Response):
        rules = {i.name.text: i for i in resp.items if isinstance(i, ast.ClassRule)}
        classes = tuple((c, to_formula(rules[c].expr)) for c in order if c in rules)
        extra = tuple(dict.fromkeys(n.text for i in resp.items if isinstance(i, ast.ExtraFeatures)
                                    for n in i.names))
        ranks = tuple(i.groups for i in resp.items if isinstance(i, ast.Rank))
        given = {e.name.text: e.score.value for i in resp.items if isinstance(i, ast.ClassScores)
                 for e in i.entries}
        # Checked: either every class has a score, or none does.
        scores = tuple(given[c] for c, _ in classes) if given else default_scores(len(classes))
        specs.append(ResponseSpec(resp.name.text, classes, extra,
                                  tuple(tuple(tuple(n.text for n in g) for g in r) for r in ranks),
                                  tuple(float(x) for x in scores)))
    return specs


def check_partitions(ctx: Context, propositions: tuple[str, ...],
                     specs: list[ResponseSpec]) -> list[ResponseSpec]:
    """Within a response type, exactly one class holds for every assignment.

    Returns the specs with their classes' decision diagrams. The variable
    order (see `proofs`): declaration order while it stays small, so that a
    policy's bytes (and schema hashes) stay put as it is edited; else the
    order the class formulas first mention the propositions; else the
    declaration order with the whole budget; else E0130 at the class whose
    diagram crossed the budget, stopped there before the time and memory
    are spent.
    """
    attempts = [(propositions, NODE_BUDGET // 5)]
    heuristic = appearance_order(propositions, (f for s in specs for _, f in s.classes), ctx.formulas)
    if heuristic != propositions:
        attempts += [(heuristic, NODE_BUDGET), (propositions, NODE_BUDGET)]
    else:
        attempts.append((propositions, NODE_BUDGET))
    for order, budget in attempts:
        space = Space(propositions, order, budget)
        built: dict[str, list] = {}
        where: tuple[str, str] = ("", "")
        try:
            for spec in specs:
                built[spec.name] = []
                for name, f in spec.classes:
                    where = (spec.name, name)
                    built[spec.name].append((name, space.build(f, ctx.formulas)))
            problems, diagrams, exported = {}, {}, 0
            for spec in specs:
                where = (spec.name, "")
                problems[spec.name] = partition_problems(space, built[spec.name], propositions)
                diagrams[spec.name] = []
                for name, f in built[spec.name]:
                    where = (spec.name, name)
                    diagrams[spec.name].append(space.export(f))
                    # The exported copies share no nodes (nor complements):
                    # they are what `policy.json` holds, so they count too.
                    exported += len(diagrams[spec.name][-1].nodes)
                    if exported > budget:
                        raise TooLarge(budget)
        except TooLarge:
            continue
        break
    else:
        _too_large(ctx, where, len(attempts) > 2)
        return specs
    responses = {r.name.text: r for r in ctx.of(ast.Response)}
    for spec in specs:
        _report_partition(ctx, space, spec, responses[spec.name], built[spec.name], problems[spec.name])
    return [dataclasses.replace(spec, diagrams=tuple(diagrams[spec.name])) for spec in specs]


def _too_large(ctx: Context, where: tuple[str, str], reordered: bool) -> None:
    resp = next(r for r in ctx.of(ast.Response) if r.name.text == where[0])
    rule = next((i for i in resp.items if isinstance(i, ast.ClassRule) and i.name.text == where[1]), None)
    what = f"class `{where[1]}` of response `{where[0]}`" if rule else f"the classes of response `{where[0]}`"
    tried = ("in declaration order and in the order the formulas mention the propositions" if reordered
             else "in declaration order (the order the formulas mention them is the same)")
    ctx.error("E0130", (rule.name if rule else resp.name).span,
              f"{what} is too large: its decision diagram needs over {NODE_BUDGET:,} nodes",
              "declare the propositions a term combines next to each other (`x0`, `y0`, `x1`, …), "
              "or split the formula over defines of fewer propositions",
              [f"tried {tried}",
               "the diagrams prove the partition and give exact class probabilities; their size "
               "depends on the proposition order and can grow exponentially, so the compiler "
               "stops at a budget"])


def _report_partition(ctx: Context, space: Space, spec: ResponseSpec, resp: ast.Response, built,
                      problems) -> None:
    rules = {i.name.text: i for i in resp.items if isinstance(i, ast.ClassRule)}
    for problem in problems:
        care = _care(space, [f for n, f in built if n in problem.classes] or [f for _, f in built])
        shown = ", ".join(f"{v}={'true' if problem.assignment[v] else 'false'}" for v in care) \
            or "the propositions take any values"
        if problem.kind == "empty":
            (name,) = problem.classes
            ctx.error("E0109", rules[name].name.span,
                      f"class `{name}` of response `{spec.name}` can never hold",
                      "its formula contradicts itself (look for `x and not x` through defines)")
        elif problem.kind == "overlap":
            a, b = problem.classes
            ctx.error("E0107", rules[b].name.span,
                      f"classes `{a}` and `{b}` of response `{spec.name}` overlap",
                      f"make them exclusive, e.g. add `and not (…)` to `{b}`",
                      [f"both hold when {shown}"])
        else:
            ctx.error("E0108", resp.name.span,
                      f"the classes of response `{spec.name}` do not cover every case",
                      "widen a class or add one for this case",
                      [f"no class holds when {shown}"])


def _care(space: Space, functions) -> list[str]:
    support: set[str] = set()
    for f in functions:
        support |= space.support(f)
    return [v for v in space.variables if v in support]


def check_ranks(ctx: Context) -> None:
    """Rank chains order a response type's classes for fitting: each label is
    one of its classes, each once in a chain, with no cycle, and never a
    worse class above a better one (`classes` lists them best to worst, and
    the scores follow that order; a rank against it would fit a reward that
    prefers what the policy calls worse). A response type whose ranks have a
    cycle gets that one report."""
    decl = next(iter(ctx.of(ast.Classes)), None)
    order = [i.text for i in decl.names] if decl else []
    for resp in ctx.of(ast.Response):
        ranks = [i for i in resp.items if isinstance(i, ast.Rank)]
        edges: dict[str, set[str]] = {}
        sound: list[ast.Rank] = []  # the lines with no duplicate, checked further below
        cyclic = False
        for rank in ranks:
            labels = [n.text for g in rank.groups for n in g]
            dup = next((x for i, x in enumerate(labels) if x in labels[:i]), None)
            if dup:
                ctx.error("E0112", rank.span, f"`{dup}` appears twice in one rank",
                          "each label has one place in a rank chain")
                continue
            sound.append(rank)
            for hi, lo in zip(rank.groups, rank.groups[1:]):
                for a in hi:
                    edges.setdefault(a.text, set()).update(b.text for b in lo)
            found = next(cycles(sorted(edges), lambda a: [(b, None) for b in sorted(edges.get(a, ()))]), None)
            if found:
                ctx.error("E0112", rank.span, f"ranks of `{resp.name.text}` form a cycle: "
                          + " > ".join(found[0]), "a label cannot rank above itself; remove one ordering")
                cyclic = True
                break  # one report per response type
        if not cyclic and order:
            _check_rank_labels(ctx, resp, sound, order)


def _check_rank_labels(ctx: Context, resp: ast.Response, ranks: list[ast.Rank], order: list[str]) -> None:
    rt = resp.name.text
    given = {i.name.text for i in resp.items if isinstance(i, ast.ClassRule)}
    classes = [c for c in order if c in given]
    for rank in ranks:
        unknown = [n for g in rank.groups for n in g if n.text not in given]
        for n in unknown:
            if ctx.seen_before("E0132", n):  # the same stray label in another rank line
                continue
            if n.text in order:
                ctx.error("E0132", n.span, f"response `{rt}` has no class `{n.text}` to rank",
                          f"rank only the classes it gives formulas for: {_list(classes)}")
            else:
                ctx.error("E0132", n.span, f"`{n.text}` in `rank` is not a class of response `{rt}`",
                          dg.did_you_mean(n.text, classes) or f"rank its classes: {_list(classes)}",
                          ["fitting compares completions whose class labels a rank separates; a label "
                           "no class has gives no pair"])
        if unknown:
            continue
        where = {c: i for i, c in enumerate(order)}
        for hi, lo in zip(rank.groups, rank.groups[1:]):
            wrong = [(a, b) for a in hi for b in lo if where[b.text] < where[a.text]]
            if wrong:
                a, b = wrong[0]
                ctx.error("E0133", b.span,
                          f"`rank` puts `{a.text}` above `{b.text}`, but `classes` lists `{b.text}` as better",
                          f"rank the classes best to worst, as `classes` does: {_list(classes)}; "
                          "or reorder `classes` (and the scores)",
                          ["a fitted reward would prefer the class the policy calls worse"])
                break
