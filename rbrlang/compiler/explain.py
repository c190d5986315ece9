"""`rbrc explain`: each response type's classes as sums of products, their
scores and rank order, its features, and the full grader prompt of a proposition."""
from __future__ import annotations

import math
import os

from ..policy import logic
from .proofs import Space, diagram_order
from ..policy import CompiledPolicy
from ..policy.scoring import default_scores

# The exchange `--proposition` shows (and the summary's prompt sizes use)
# unless one is given: neutral placeholders, so that no policy's prompt
# seems to be about another policy's subject.
SAMPLE_CONVERSATION = [{"role": "user", "content": "[the user's message]"}]
SAMPLE_RESPONSE = "[the assistant's reply that the question is about]"


# A sum of products can need exponentially many terms (`not ((x0 and y0) or
# … )` has 2^n); past these sizes explain says so instead of listing them.
MAX_PRODUCTS = 64
MAX_LITERALS = 256


def _paths_to_true(dd: logic.DecisionDiagram) -> tuple[int, int]:
    """(paths to the true leaf, literals on them), counted over the nodes."""
    paths, literals = [0, 1], [0, 0]
    for _var, low, high in dd.nodes:
        paths.append(paths[low] + paths[high])
        literals.append(literals[low] + literals[high] + paths[low] + paths[high])
    return paths[dd.root], literals[dd.root]


def sum_of_products(space: Space, dd: logic.DecisionDiagram) -> str:
    paths, literals = _paths_to_true(dd)
    if paths > MAX_PRODUCTS or literals > MAX_LITERALS:
        return (f"(not listed: {paths:,} products over {literals:,} literals before simplifying; "
                f"its decision diagram has {len(dd.nodes):,} nodes)")
    u = space.from_diagram(dd)
    cubes = space.prime_cover(u)
    if not cubes:
        return "false"
    if cubes == [{}]:
        return "true"
    terms = []
    for cube in cubes:
        lits = [name if val else f"not {name}" for name, val in
                sorted(cube.items(), key=lambda kv: space.variables.index(kv[0]))]
        terms.append(" and ".join(lits))
    return "\n      or ".join(f"({t})" if len(cubes) > 1 and " and " in t else t for t in terms)


def _number(x: float) -> str:
    return f"{x:.4g}"


def diagram_space(proposition_names, diagrams) -> Space:
    """The space to rebuild a policy's class diagrams in (for
    `sum_of_products`): the order the compiler gave them, as another can need
    exponentially more nodes. `diagrams`: every response type's."""
    return Space(proposition_names, diagram_order(proposition_names, diagrams))


def explain_policy(policy: CompiledPolicy, tokenizer=None) -> str:
    """`tokenizer` (a transformers tokenizer): count tokens, not characters."""
    space = diagram_space(policy.proposition_names,
                          [dd for rt in policy.response_types.values() for dd in rt.diagrams])
    out = [f"policy {policy.name}" + (f": {policy.description}" if policy.description else "")]
    for rt in policy.response_types.values():
        out.append("")
        routed = sorted(c for c, t in policy.routes.items() if t == rt.name)
        if policy.default_route == rt.name:
            routed.append("default")
        out.append(f"response {rt.name}" + (f"  (routes: {', '.join(routed)})" if routed else ""))
        for name, dd in zip(rt.classes, rt.diagrams):
            out.append(f"  {name}")
            out.append(f"    = {sum_of_products(space, dd)}")
        scores = rt.scores
        spaced = all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(scores, default_scores(len(scores))))
        out.append("  scores (reward before fitting" + (", evenly spaced" if spaced else "") + "): "
                   + ", ".join(f"{c} {_number(x)}" for c, x in zip(rt.classes, scores)))
        for chain in rt.ranks:  # without `rank` lines: the classes, best to worst
            out.append("  rank " + " > ".join(g[0] if len(g) == 1 else "{" + ", ".join(g) + "}" for g in chain))
        out.append(f"  features ({len(rt.features)}, schema {rt.schema_hash[:12]}):")
        out.append("    " + ", ".join(rt.features))
    out.append("")
    unit = "tokens" if tokenizer is not None else "characters"
    out.append(f"prompts ({unit}, sample exchange): computed once per proposition / once per completion "
               "(shared by its propositions) / per completion and proposition")

    def size(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text)

    graded = [p for p in policy.propositions if p.graded]
    prompts = {p.name: policy.render(p.name, SAMPLE_CONVERSATION, SAMPLE_RESPONSE) for p in graded}
    shared = len(os.path.commonprefix(list(prompts.values()))) if len(graded) > 1 else 0
    for p in policy.propositions:
        if p.graded:
            text, static = prompts[p.name], len(policy.static_prefix(p.name))
            item = max(static, shared)
            out.append(f"  {p.name}: {size(text[:static])} / {size(text[static:item])} / {size(text[item:])}")
        else:
            out.append(f"  {p.name}: matches /{p.pattern}/{p.flags} (no grader call)")
    return "\n".join(out) + "\n"
