"""Lark parse tree → AST (`ast.py`), keeping every node's source span."""
from __future__ import annotations

from lark import Token, Transformer, Tree, v_args

from ...errors import EscapeError
from ...source import Span
from . import ast
from .strings import literal_value


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _inside(file: str, tok: Token, offset: int, length: int) -> Span:
    """The span of `length` characters at `offset` in a token (which may run over lines)."""
    before = str(tok)[:offset]
    line = tok.line + before.count("\n")
    column = (tok.column + offset) if "\n" not in before else offset - before.rfind("\n")
    start = tok.start_pos + offset
    return Span(file, line, column, line, column + length, start, start + length)


@v_args(meta=True)
class ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__(visit_tokens=False)
        self.file = file

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return ast.NOSPAN
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column,
                    meta.start_pos, meta.end_pos)

    def _ident(self, tok: Token) -> ast.Ident:
        return ast.Ident(str(tok), _tok_span(self.file, tok))

    def _str(self, tok: Token) -> ast.Str:
        try:
            value, _ = literal_value(str(tok))
        except EscapeError as exc:  # the caret under the escape itself, not the whole string
            raise EscapeError(exc.text, exc.offset, _inside(self.file, tok, exc.offset, len(exc.text))) from None
        return ast.Str(value, _tok_span(self.file, tok))

    # --- top level -----------------------------------------------------------
    def start(self, meta, children):
        header, *items = children
        return ast.Module(version=header, items=tuple(items), span=self._span(meta))

    def header(self, meta, children):
        return int(children[0])

    def policy_decl(self, meta, children):
        desc = self._str(children[1]) if len(children) > 1 else None
        return ast.PolicyDecl(self._ident(children[0]), desc, self._span(meta))

    def import_decl(self, meta, children):
        return ast.Import(self._str(children[0]), self._span(meta))

    def grader_decl(self, meta, children):
        return ast.Grader(tuple(children), self._span(meta))

    def grader_template(self, meta, children):
        return ast.GraderSetting("template", (self._ident(children[0]),), self._span(meta))

    def grader_yes(self, meta, children):
        return ast.GraderSetting("yes", tuple(self._str(c) for c in children), self._span(meta))

    def grader_no(self, meta, children):
        return ast.GraderSetting("no", tuple(self._str(c) for c in children), self._span(meta))

    def grader_system(self, meta, children):
        return ast.GraderSetting("system", (self._str(children[0]),), self._span(meta))

    def grader_prefill(self, meta, children):
        return ast.GraderSetting("prefill", (self._str(children[0]),), self._span(meta))

    def template_decl(self, meta, children):
        return ast.Template(self._ident(children[0]), self._str(children[1]), self._span(meta))

    # --- propositions ----------------------------------------------------------
    def proposition(self, meta, children):
        name, *items = children
        return ast.Proposition(self._ident(name), tuple(items), self._span(meta))

    def question(self, meta, children):
        return ast.Question(self._str(children[0]), self._span(meta))

    def instruct(self, meta, children):
        return ast.Instruct(self._str(children[0]), self._span(meta))

    def prop_template(self, meta, children):
        return ast.PropTemplate(self._ident(children[0]), self._span(meta))

    def short_example(self, meta, children):
        label, text = children
        turn = ast.Turn("assistant", self._str(text), self._span(meta))
        return ast.Example(self._ident(label), (turn,), True, self._span(meta))

    def long_example(self, meta, children):
        label, *turns = children
        return ast.Example(self._ident(label), tuple(turns), False, self._span(meta))

    def turn(self, meta, children):
        role, text = children
        return ast.Turn(str(role), self._str(text), self._span(meta))

    def matches_prop(self, meta, children):
        name, regex = children
        body = str(regex)
        close = body.rfind("/")
        return ast.Matches(self._ident(name), body[1:close], body[close + 1:], self._span(meta))

    # --- logic -------------------------------------------------------------------
    def define(self, meta, children):
        return ast.Define(self._ident(children[0]), children[1], self._span(meta))

    def classes_decl(self, meta, children):
        return ast.Classes(tuple(self._ident(c) for c in children), self._span(meta))

    def response(self, meta, children):
        name, *items = children
        return ast.Response(self._ident(name), tuple(items), self._span(meta))

    def class_rule(self, meta, children):
        return ast.ClassRule(self._ident(children[0]), children[1], self._span(meta))

    def rank(self, meta, children):
        return ast.Rank(tuple(children), self._span(meta))

    def extra_features(self, meta, children):
        return ast.ExtraFeatures(tuple(self._ident(c) for c in children), self._span(meta))

    def class_scores(self, meta, children):
        return ast.ClassScores(tuple(children), self._span(meta))

    def class_score(self, meta, children):
        name, number = children
        return ast.ClassScore(self._ident(name), ast.Num(str(number), _tok_span(self.file, number)),
                              self._span(meta))

    def rank_group(self, meta, children):
        return tuple(self._ident(c) for c in children)

    def route(self, meta, children):
        target, name = children
        return ast.Route(target, self._ident(name), self._span(meta))

    def route_target(self, meta, children):
        return tuple(self._str(c) for c in children)

    def route_default(self, meta, children):
        return None

    def or_expr(self, meta, children):
        return ast.Or(tuple(children), self._span(meta))

    def and_expr(self, meta, children):
        return ast.And(tuple(children), self._span(meta))

    def not_(self, meta, children):
        return ast.Not(children[0], self._span(meta))

    def ref(self, meta, children):
        return ast.Ref(self._ident(children[0]), self._span(meta))

    def call(self, meta, children):
        func, *args = children
        return ast.Call(str(func), tuple(args), self._span(meta))


def tree_depth(tree: Tree, limit: int) -> tuple[int, Tree | None]:
    """Deepest nesting level, and the first node found at `limit` (or the
    deepest one), found without recursion since the input may be hostile."""
    best, deepest = 0, None
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > best and best < limit:
            best, deepest = depth, node
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))
    return best, deepest
