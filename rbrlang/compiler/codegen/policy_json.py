"""The `policy.json` document: everything a trainer needs, without the compiler."""
from __future__ import annotations

from ... import __version__
from ...policy import logic
from ...policy.format import FORMAT_VERSION, canonical, sha256, template_path
from ..check.model import CheckedPolicy, ResponseSpec

def feature_names(policy: CheckedPolicy, spec: ResponseSpec) -> tuple[list[str], list[str]]:
    """(propositions, classes) of a response type's features, in schema order:
    propositions its classes mention through defines (plus its `features`
    line) in declaration order, then its classes in class order."""
    defines = policy.define_map
    mentioned: set[str] = set(spec.extra_features)
    for _, f in spec.classes:
        mentioned |= logic.variables(f, defines)
    props = [p for p in policy.proposition_names if p in mentioned]
    return props, [c for c, _ in spec.classes]


def build(policy: CheckedPolicy, templates: dict[str, str]) -> dict:
    """`templates` maps each grader proposition to its generated Jinja source."""
    meaning = {}  # feature -> what it means, for the schema hash
    propositions = []
    for p in policy.propositions:
        if p.graded:
            digest = sha256(templates[p.name])
            propositions.append({"name": p.name, "kind": "grader", "question": p.question,
                                 "template": template_path(p.name), "template_sha256": digest})
            meaning[p.name] = {"grader": digest, "yes": policy.grader.yes, "no": policy.grader.no}
        else:
            propositions.append({"name": p.name, "kind": "matches", "pattern": p.pattern, "flags": p.flags})
            meaning[p.name] = {"matches": p.pattern, "flags": p.flags}

    responses = []
    for spec in policy.responses:
        props, classes = feature_names(policy, spec)
        class_rows = []
        for (cname, f), score, dd in zip(spec.classes, spec.scores, spec.diagrams):  # the checker's
            # `score`: the class's reward before any fit. Not part of the
            # schema hash: it changes no feature, so fitted weights stay valid.
            class_rows.append({"name": cname, "expr": logic.to_json(f), "dd": dd.to_json(), "score": score})
        features = props + classes
        schema = {"response": spec.name, "features": features,
                  "meaning": [meaning[p] for p in props] + [c["dd"] for c in class_rows]}
        ranks = [[list(g) for g in chain] for chain in spec.ranks]
        labels = list(dict.fromkeys(n for chain in spec.ranks for g in chain for n in g)) or classes
        responses.append({
            "name": spec.name, "classes": class_rows, "propositions": props,
            "features": features, "ranks": ranks or [[[c] for c in classes]], "labels": labels,
            "schema_hash": sha256(canonical(schema)),
        })

    routes, default = {}, None
    for r in policy.routes:
        if r.categories is None:
            default = r.target
        else:
            routes.update({c: r.target for c in r.categories})

    return {
        "format": FORMAT_VERSION,
        "policy": policy.name,
        "description": policy.description,
        "compiler": __version__,
        "source_sha256": policy.source_hash,
        "grader": {"template": policy.grader.template, "yes": list(policy.grader.yes), "no": list(policy.grader.no)},
        "propositions": propositions,
        "defines": [{"name": n, "expr": logic.to_json(f)} for n, f in policy.defines],
        "class_order": list(policy.class_order),
        "response_types": responses,
        "routes": routes,
        "default_route": default,
    }
