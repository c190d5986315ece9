"""`rbrc import-yaml`: the Rule Based Rewards paper's YAML policy format → `.rbr`.

The format: `prompt_template` with `{question}` and `{response}` placeholders,
`simple_propositions` (name → {prompt}), `derived_propositions` and
`completion_classes` whose conditions are mappings `{name: true/false}` meaning
a conjunction of literals, and `completion_class_order`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .. import diagnostics as dg
from ..source import SourceError, Span, read_source
from .result import Result
from .syntax import ast
from .syntax.printer import format_module

KNOWN_KEYS = ("prompt_template", "completion_class_order", "completion_classes",
              "derived_propositions", "simple_propositions")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RESERVED = {"and", "or", "not", "rank", "features", "scores", "all", "any", "none"}
PLACEHOLDER = re.compile(r"\{(\w*)\}")


class _Fail(Exception):
    def __init__(self, diag: dg.Diagnostic):
        self.diag = diag


class _Reader:
    """Walks composed YAML nodes, so every error can name its line."""

    def __init__(self, file: str):
        self.file = file

    def span(self, node: Node) -> Span:
        m, e = node.start_mark, node.end_mark
        end_col = e.column + 1 if e.line == m.line else m.column + 2
        return Span(self.file, m.line + 1, m.column + 1, m.line + 1, max(end_col, m.column + 2), m.index, e.index)

    def fail(self, node: Node, message: str, help: str) -> _Fail:
        return _Fail(dg.error("E0201", self.span(node), message, help))

    def mapping(self, node: Node, what: str) -> list[tuple[ScalarNode, Node]]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping", f"write {what} as `key: value` lines")
        seen: dict[str, ScalarNode] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):
                raise self.fail(key, f"keys in {what} must be plain names", "use a name as the key")
            if key.value in seen:
                raise self.fail(key, f"`{key.value}` appears twice in {what}", "keep one entry")
            seen[key.value] = key
        return list(node.value)

    def text(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag.endswith((":bool", ":int", ":float", ":null")):
            raise self.fail(node, f"{what} must be text", "write it as a string (a `|-` block suits long text)")
        return node.value

    def name(self, key: ScalarNode, what: str) -> str:
        if not NAME.match(key.value):
            raise self.fail(key, f"`{key.value}` is not a valid {what} name",
                            "names hold letters, digits and `_`, and do not start with a digit")
        if key.value in RESERVED:
            raise self.fail(key, f"`{key.value}` is a reserved word in rbrlang", "rename it")
        return key.value

    def literals(self, node: Node, what: str) -> ast.Expr:
        pairs = self.mapping(node, what)
        if not pairs:
            raise self.fail(node, f"{what} has no conditions", "list at least one `proposition: true/false`")
        terms = []
        for key, value in pairs:
            name = self.name(key, "proposition")
            if not (isinstance(value, ScalarNode) and value.tag.endswith(":bool")):
                raise self.fail(value, f"the condition on `{name}` must be true or false",
                                "a condition reads `name: true` or `name: false`")
            ref = ast.Ref(ast.Ident(name))
            terms.append(ref if value.value.lower() in ("true", "yes", "on") else ast.Not(ref))
        return terms[0] if len(terms) == 1 else ast.And(tuple(terms))


def import_yaml(path, policy_name: Optional[str] = None) -> Result[str]:
    """Convert a YAML policy file; the result's value is formatted `.rbr`."""
    path = Path(path)
    try:
        src = read_source(path)
    except SourceError as exc:
        # The reader's help speaks of `.rbr` files; here the input is YAML.
        help = "give the path of a YAML policy file such as `proposition_prompts.yaml`" \
            if exc.code == "E0001" else exc.help.replace("a `.rbr` text file", "a YAML text file")
        return Result(None, (dg.error(exc.code, exc.span, exc.message, help),), {})
    sources = {src.name: src.text}
    reader = _Reader(src.name)
    try:
        root = yaml.compose(src.text, Loader=yaml.SafeLoader)
        if root is None:
            raise _Fail(dg.error("E0201", Span.point(src.name), "the YAML file is empty",
                                 "expected the keys " + ", ".join(f"`{k}`" for k in KNOWN_KEYS)))
        module = _convert(reader, root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        span = Span.point(src.name, mark.line + 1, mark.column + 1, mark.index) if mark else Span.point(src.name)
        problem = getattr(exc, "problem", None) or str(exc)
        return Result(None, (dg.error("E0200", span, f"not valid YAML: {problem}",
                                            "check the indentation and quoting around this place"),), sources)
    except _Fail as fail:
        return Result(None, (fail.diag,), sources)

    name = policy_name or re.sub(r"\W", "_", path.stem) or "imported"
    if not NAME.match(name):
        name = "imported_" + name
    module = ast.Module(1, (ast.PolicyDecl(ast.Ident(name), ast.Str(f"Imported from {path.name}")),) + module.items)
    digest = hashlib.sha256(src.text.encode("utf-8")).hexdigest()[:16]
    body = format_module(module)
    header = (f"# Imported from {path.name} (sha256 {digest}…) by `rbrc import-yaml`.\n"
              "# Simple propositions became propositions, derived ones defines, and each\n"
              "# completion class a formula in one response per response type.\n\n")
    text = body.replace("rbr 1\n\n", "rbr 1\n\n" + header, 1)
    return Result(text, (), sources)


def _convert(r: _Reader, root: Node) -> ast.Module:
    top = dict()
    for key, value in r.mapping(root, "the policy"):
        if key.value not in KNOWN_KEYS:
            raise r.fail(key, f"unknown key `{key.value}`",
                         "the format's keys are " + ", ".join(f"`{k}`" for k in KNOWN_KEYS))
        top[key.value] = (key, value)
    for required in ("simple_propositions", "completion_classes", "completion_class_order"):
        if required not in top:
            raise r.fail(root, f"missing key `{required}`", f"add `{required}:` at the top level")

    items: list[ast.Item] = []
    if "prompt_template" in top:
        items.append(ast.Template(ast.Ident("default"), ast.Str(_template(r, top["prompt_template"][1]))))

    for key, value in r.mapping(top["simple_propositions"][1], "`simple_propositions`"):
        name = r.name(key, "proposition")
        fields = dict((k.value, (k, v)) for k, v in r.mapping(value, f"proposition `{name}`"))
        for k, (knode, _) in fields.items():
            if k != "prompt":
                raise r.fail(knode, f"unknown key `{k}` in proposition `{name}`", "a proposition has only `prompt`")
        if "prompt" not in fields:
            raise r.fail(key, f"proposition `{name}` has no `prompt`", "add `prompt: |-` with the question")
        question = r.text(fields["prompt"][1], f"the prompt of `{name}`")
        items.append(ast.Proposition(ast.Ident(name), (ast.Question(ast.Str(question)),)))

    if "derived_propositions" in top:
        for key, value in r.mapping(top["derived_propositions"][1], "`derived_propositions`"):
            name = r.name(key, "define")
            items.append(ast.Define(ast.Ident(name), r.literals(value, f"derived proposition `{name}`")))

    order_node = top["completion_class_order"][1]
    if not isinstance(order_node, SequenceNode) or not order_node.value:
        raise r.fail(order_node, "`completion_class_order` must be a list of class names", "write `- name` lines")
    order = []
    for n in order_node.value:
        if not isinstance(n, ScalarNode):
            raise r.fail(n, "class names must be plain names", "write `- name`")
        order.append(r.name(n, "class"))
    items.append(ast.Classes(tuple(ast.Ident(c) for c in order)))

    rules: dict[str, list[ast.ClassRule]] = {}
    for key, value in r.mapping(top["completion_classes"][1], "`completion_classes`"):
        cls = r.name(key, "class")
        if cls not in order:
            raise r.fail(key, f"class `{cls}` is not in `completion_class_order`", "add it to the order")
        for rkey, cond in r.mapping(value, f"class `{cls}`"):
            rt = r.name(rkey, "response type")
            rules.setdefault(rt, []).append(ast.ClassRule(ast.Ident(cls), r.literals(cond, f"`{cls}` for `{rt}`")))
    for rt, class_rules in rules.items():
        ranked = sorted(class_rules, key=lambda c: order.index(c.name.text))
        items.append(ast.Response(ast.Ident(rt), tuple(ranked)))
    return ast.Module(1, tuple(items))


def _template(r: _Reader, node: Node) -> str:
    text = r.text(node, "`prompt_template`")
    # Their template is Python format-style: keep its text literal in Jinja.
    for opener in ("{{", "{%", "{#"):
        text = text.replace(opener, opener[0] + "\x00" + opener[1])
    for m in PLACEHOLDER.finditer(text):
        if m.group(1) not in ("question", "response"):
            raise r.fail(node, f"unknown placeholder `{m.group(0)}` in `prompt_template`",
                         "the format knows `{question}` and `{response}`")
    if "{response}" not in text:
        raise r.fail(node, "`prompt_template` never shows `{response}`", "add `{response}` where the answer goes")
    text = text.replace("{question}", "{{ question }}").replace("{response}", "{{ response }}")
    return text.replace("{\x00{", "{{ '{{' }}").replace("{\x00%", "{{ '{%' }}").replace("{\x00#", "{{ '{#' }}")
