"""The `policy.json` document: everything a trainer needs, without the compiler,
as the rows of `policy/format.py` (the loader reads the same classes back)."""
from __future__ import annotations

from ..._version import __version__
from ...policy import logic
from ...policy.format import (GRADER, MATCHES, ClassRow, DefineRow, GraderRow, PolicyDocument, PropositionRow,
                              ResponseTypeRow, canonical, sha256, template_path)
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


def build(policy: CheckedPolicy, templates: dict[str, str]) -> PolicyDocument:
    """`templates` maps each grader proposition to its generated Jinja source."""
    meaning = {}  # feature -> what it means, for the schema hash
    propositions = []
    for p in policy.propositions:
        if p.graded:
            digest = sha256(templates[p.name])
            propositions.append(PropositionRow(p.name, GRADER, question=p.question, template=template_path(p.name),
                                               template_sha256=digest, instruct=p.instruct))
            meaning[p.name] = {"grader": digest, "yes": policy.grader.yes, "no": policy.grader.no}
            # The grader's chat turns change P(yes) too; absent, the hash is as it always was.
            meaning[p.name].update({k: v for k, v in (("system", policy.grader.system),
                                                      ("prefill", policy.grader.prefill)) if v})
        else:
            propositions.append(PropositionRow(p.name, MATCHES, pattern=p.pattern, flags=p.flags))
            meaning[p.name] = {"matches": p.pattern, "flags": p.flags}

    responses = []
    for spec in policy.responses:
        props, classes = feature_names(policy, spec)
        # `score`: the class's reward before any fit. Not part of the schema
        # hash: it changes no feature, so fitted weights stay valid. The diagrams are the checker's.
        class_rows = tuple(ClassRow(cname, f, dd, score)
                           for (cname, f), score, dd in zip(spec.classes, spec.scores, spec.diagrams))
        features = props + classes
        schema = {"response": spec.name, "features": features,
                  "meaning": [meaning[p] for p in props] + [c.dd.to_json() for c in class_rows]}
        labels = tuple(dict.fromkeys(n for chain in spec.ranks for g in chain for n in g)) or tuple(classes)
        responses.append(ResponseTypeRow(
            name=spec.name, classes=class_rows, propositions=tuple(props), features=tuple(features),
            ranks=tuple(tuple(tuple(g) for g in chain) for chain in spec.ranks) or (tuple((c,) for c in classes),),
            labels=labels, schema_hash=sha256(canonical(schema))))

    routes, default = {}, None
    for r in policy.routes:
        if r.categories is None:
            default = r.target
        else:
            routes.update({c: r.target for c in r.categories})

    return PolicyDocument(
        policy=policy.name, description=policy.description, compiler=__version__,
        source_sha256=policy.source_hash,
        grader=GraderRow(policy.grader.template, tuple(policy.grader.yes), tuple(policy.grader.no),
                         policy.grader.system, policy.grader.prefill),
        propositions=tuple(propositions), defines=tuple(DefineRow(n, f) for n, f in policy.defines),
        class_order=tuple(policy.class_order), response_types=tuple(responses), routes=routes,
        default_route=default)
