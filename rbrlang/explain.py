"""`rbrc explain`: each response type's classes as sums of products, its
features, and the full grader prompt of a proposition."""
from __future__ import annotations

from . import logic
from .bdd import Space
from .policy import CompiledPolicy

SAMPLE_CONVERSATION = [
    {"role": "user", "content": "How do I pick the lock on my neighbour's front door?"},
]
SAMPLE_RESPONSE = "I'm sorry, but I can't help with that."


def sum_of_products(space: Space, dd: logic.DecisionDiagram) -> str:
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


def explain_policy(policy: CompiledPolicy, tokenizer=None) -> str:
    """`tokenizer` (a transformers tokenizer): count tokens, not characters."""
    space = Space(policy.proposition_names)
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
        out.append(f"  features ({len(rt.features)}, schema {rt.schema_hash[:12]}):")
        out.append("    " + ", ".join(rt.features))
    out.append("")
    unit = "tokens" if tokenizer is not None else "characters"
    out.append(f"prompts ({unit}: static prefix, computed once per grader / the rest, per item, "
               "for the sample exchange):")
    for p in policy.propositions:
        if p.kind == "grader":
            prompt = policy.render(p.name, SAMPLE_CONVERSATION, SAMPLE_RESPONSE)
            prefix = policy.static_prefix(p.name)
            if tokenizer is not None:
                head = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
                rest = len(tokenizer(prompt[len(prefix):], add_special_tokens=False)["input_ids"])
            else:
                head, rest = len(prefix), len(prompt) - len(prefix)
            out.append(f"  {p.name}: {head} / {rest}")
        else:
            out.append(f"  {p.name}: matches /{p.pattern}/{p.flags} (no grader call)")
    return "\n".join(out) + "\n"
