"""check: the loaded program → `CheckedPolicy`, as a named list of passes.

Each pass reads the AST (and what earlier passes stored in the context) and
adds diagnostics. The partition proof needs a sound namespace, so it runs only
when every earlier pass found no error: one mistake does not echo as ten.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Optional

from ... import diagnostics as dg
from ...policy import logic
from ..result import Result
from ..syntax import ast
from .context import Context
from .defines import convert_defines, define_cycles
from .model import CheckedPolicy, ExampleSpec, PropositionSpec
from .names import collect_names, resolve_refs
from .program import Program, load_program
from .propositions import check_propositions
from .regexes import check_regexes
from .responses import (check_class_rules, check_has_responses, check_partitions, check_ranks, check_scores,
                        class_order, response_specs)
from .routes import check_routes
from .templates import check_grader, check_templates, template_sources

__all__ = ["check_file", "check_loaded", "check_program", "load_program", "CheckedPolicy", "STAGES"]

# The passes that only report, in order; those that also produce part of the
# checked policy are called by name in `check_program`.
STAGES = (
    ("collect_names", collect_names),
    ("resolve_refs", resolve_refs),
    ("define_cycles", define_cycles),
    ("check_propositions", check_propositions),
    ("check_regexes", check_regexes),
    ("check_templates", check_templates),
    ("check_ranks", check_ranks),
    ("check_has_responses", check_has_responses),
)


def check_file(path: Path, overlay: Optional[Mapping[Path, bytes]] = None) -> Result[CheckedPolicy]:
    """Load, parse and check a policy file (`overlay`: as `load_program`): the
    checked policy when there is no error, every diagnostic, and the sources
    they point into."""
    program, diags, sources = load_program(path, overlay)
    policy, diags = check_loaded(program, diags)
    return Result(policy, tuple(diags), sources)


def check_loaded(program: Optional[Program], diags: list[dg.Diagnostic]
                 ) -> tuple[Optional[CheckedPolicy], list[dg.Diagnostic]]:
    """`check_file` after loading, for a caller that keeps the program too (the
    language server indexes its names): loading errors stop the check."""
    if program is None or dg.has_errors(diags):
        return None, dg.normalise(diags)
    policy, more = check_program(program)
    return policy, dg.normalise(diags + more)


def check_program(program: Program) -> tuple[Optional[CheckedPolicy], list[dg.Diagnostic]]:
    ctx = Context(program)
    ctx.items = list(program.items())
    for _name, stage in STAGES:
        stage(ctx)
    grader = check_grader(ctx)
    policy_decl = ctx.one(ast.PolicyDecl, "policy")
    order = class_order(ctx)
    check_class_rules(ctx, order)
    check_scores(ctx, order)
    routes = check_routes(ctx)
    if ctx.failed:
        return None, ctx.diags
    convert_defines(ctx)
    propositions = _proposition_specs(ctx, grader.template)
    names = tuple(p.name for p in propositions)
    specs = response_specs(ctx, order)
    specs = check_partitions(ctx, names, specs)
    _unused_propositions(ctx, specs)
    if ctx.failed:
        return None, ctx.diags
    name = policy_decl.name.text if policy_decl else program.root.stem
    description = policy_decl.description.value if policy_decl and policy_decl.description else ""
    templates = template_sources(ctx)
    used = {p.template for p in propositions if p.graded}
    return CheckedPolicy(
        name=name, description=description, grader=grader,
        templates={k: v for k, v in templates.items() if k in used},
        propositions=propositions, defines=tuple(ctx.formulas.items()),
        class_order=order, responses=tuple(specs), routes=tuple(routes),
        source_hash=_source_hash(program),
    ), ctx.diags


def _source_hash(program: Program) -> str:
    """Independent of where the policy lives on disk, so output is reproducible."""
    h = hashlib.sha256()
    base = program.root.parent
    for unit in sorted(program.units, key=lambda u: u.source.path.as_posix()):
        try:
            rel = unit.source.path.relative_to(base).as_posix()
        except ValueError:
            rel = unit.source.path.name
        h.update(rel.encode() + b"\0" + unit.source.text.encode() + b"\0")
    return h.hexdigest()


def _proposition_specs(ctx: Context, default_template: str) -> tuple[PropositionSpec, ...]:
    out = []
    for _, item in ctx.items:
        if isinstance(item, ast.Matches):
            out.append(PropositionSpec(item.name.text, "matches", pattern=item.pattern, flags=item.flags))
        elif isinstance(item, ast.Proposition):
            question = next(i.text.value for i in item.items if isinstance(i, ast.Question))
            template = next((i.name.text for i in item.items if isinstance(i, ast.PropTemplate)),
                            default_template)
            examples = tuple(ExampleSpec(e.label.text, tuple((t.role, t.text.value) for t in e.turns))
                             for e in item.items if isinstance(e, ast.Example))
            instruct = next((i.text.value for i in item.items if isinstance(i, ast.Instruct)), "")
            out.append(PropositionSpec(item.name.text, "grader", question, examples, template, instruct=instruct))
    return tuple(out)


def _unused_propositions(ctx: Context, specs) -> None:
    used: set[str] = set()
    for spec in specs:
        for _, f in spec.classes:
            used |= logic.variables(f, ctx.formulas)
        used |= set(spec.extra_features)
    for _, item in ctx.items:
        if isinstance(item, (ast.Proposition, ast.Matches)) and item.name.text not in used:
            ctx.warning("W0105", item.name.span, f"proposition `{item.name.text}` is not used by any response type",
                        "use it in a class formula (directly or through a define), list it in a "
                        "response's `features`, or remove it")
