"""Shared helpers: write policies to real files and run the real CLI."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from rbrlang.cli import main
from tests.support.policies import MINIMAL  # noqa: F401 (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "openai-rbr"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def rbrc(capsys):
    """Run `rbrc ARGS…` in-process; returns (exit code, stdout, stderr)."""
    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def golden(path: Path, actual: str) -> None:
    """Compare with a golden file; UPDATE_GOLDEN=1 rewrites it."""
    if UPDATE or not path.exists():
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"golden mismatch: {path}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama grader with a locally trained tokenizer, built once. The
    tokenizer also learns the safety policy's templates, so its prompts are short."""
    from rbrlang.policy import load_policy
    from rbrlang.runtime.tiny import build_tiny_grader
    templates = sorted({p.template for p in load_policy(ROOT / "compiled/safety").propositions
                        if p.graded})
    return build_tiny_grader(tmp_path_factory.mktemp("tiny") / "grader", seed=0, corpus=templates)


def gold_rows(n: int | None = None, shortest: bool = True) -> list[dict]:
    import json
    rows = [json.loads(line) for line in (SHARED / "gold_train.jsonl").read_text().splitlines()]
    if shortest:
        rows.sort(key=lambda r: len(json.dumps(r)))
    return rows[:n] if n else rows
