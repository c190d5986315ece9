"""Editor highlighting: the TextMate grammar is generated from grammar/rbr.lark
(and regenerating it changes nothing), and VS Code's own tokeniser
(vscode-textmate with Oniguruma, from npm) scopes every token of every
policy in policies/."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.files import ROOT

EDITORS = ROOT / "editors"
GRAMMAR = EDITORS / "vscode/syntaxes/rbr.tmLanguage.json"
# The npm packages VS Code tokenises with, at the versions these tests ran.
NPM_PACKAGES = ("vscode-textmate@9.3.2", "vscode-oniguruma@2.0.1")


def _generator():
    spec = importlib.util.spec_from_file_location("generate_tmlanguage", EDITORS / "generate_tmlanguage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_grammar_is_what_the_generator_writes():
    assert GRAMMAR.read_text(encoding="utf-8") == _generator().rendered(), \
        "run python editors/generate_tmlanguage.py and commit the result"


def test_a_keyword_added_to_the_grammar_is_highlighted_without_editing_the_generator():
    from rbrlang.compiler.syntax.lexicon import lexicon

    generator = _generator()
    lex = lexicon()
    assert {"proposition", "matches", "route", "rbr"} <= set(lex.keywords)
    grown = dataclasses.replace(lex, keywords=lex.keywords + ("rationale",))
    keyword_rule = generator.tm_grammar(grown)["repository"]["keyword"]["match"]
    assert "rationale" in keyword_rule and "rationale" not in generator.tm_grammar(lex)["repository"]["keyword"]["match"]
    # Every literal word of the grammar is in the committed grammar's keyword or operator rule.
    rules = json.loads(GRAMMAR.read_text())["repository"]
    for word in lex.keywords:
        assert f"|{word}|" in rules["keyword"]["match"].replace("(?:", "|").replace(")", "|") or \
            word in lex.operators, word


def test_the_vscode_extension_starts_rbrc_lsp_with_this_grammar():
    folder = EDITORS / "vscode"
    manifest = json.loads((folder / "package.json").read_text())
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["extensions"] == [".rbr"] and (folder / language["configuration"]).is_file()
    assert (folder / grammar["path"]).resolve() == GRAMMAR and grammar["scopeName"] == "source.rbr"
    settings = manifest["contributes"]["configuration"]["properties"]
    assert settings["rbrlang.server.command"]["default"] == ["rbrc", "lsp"]
    assert "rbrlang.server.command" in (folder / manifest["main"]).read_text()
    json.loads((folder / "language-configuration.json").read_text())


@pytest.fixture(scope="module")
def textmate(tmp_path_factory):
    """NODE_PATH for vscode-textmate and vscode-oniguruma: installed once into a
    cache folder outside the repository (.ci/run does the same)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the TextMate grammar is tokenised with VS Code's npm packages")
    cache = Path(os.environ.get("RBRLANG_NPM") or
                 Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rbrlang-npm")
    modules = cache / "node_modules"
    if not all((modules / p.rsplit("@", 1)[0] / "package.json").is_file() for p in NPM_PACKAGES):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(cache),
                        *NPM_PACKAGES], check=True, timeout=600, capture_output=True)
    return modules


def test_every_token_of_every_shipped_policy_is_scoped(textmate):
    files = sorted(str(p) for p in (ROOT / "policies").rglob("*.rbr"))
    assert len(files) >= 2
    run = subprocess.run(["node", str(EDITORS / "vscode/test/tokenize.js"), str(GRAMMAR), *files],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "NODE_PATH": str(textmate)})
    assert run.returncode == 0, run.stderr
    tokens = json.loads(run.stdout)
    unscoped = [(Path(f).name, line, text) for f, toks in tokens.items() for line, text, scopes in toks
                if len(scopes) == 1 and text.strip()]
    assert unscoped == [], f"tokens the grammar does not scope: {unscoped[:20]}"
    scope_of = {}
    for toks in tokens.values():
        for _, text, scopes in toks:
            scope_of.setdefault(text, scopes[-1])
    assert scope_of["proposition"] == "keyword.control.rbr"
    assert scope_of["and"] == scope_of["not"] == "keyword.operator.logical.rbr"
    assert scope_of["apology"] == "variable.other.rbr"
    assert scope_of["none"] == "support.function.builtin.rbr" and scope_of["assistant"] == "storage.type.role.rbr"
    assert scope_of["->"] == "keyword.operator.rbr" and scope_of['"'] == "string.quoted.double.rbr"
    assert any(s.startswith("comment.line") for s in scope_of.values())
