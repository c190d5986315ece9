"""The repository's paths, and the files tests write and read: policies into
real files, golden files, the shared gold data."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "openai-rbr"
GOLDEN = ROOT / "tests" / "golden"
SAFETY = ROOT / "compiled" / "safety"  # the committed compiled safety policy: tests only read it
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def golden(path: Path, actual: str) -> None:
    """Compare with a golden file; UPDATE_GOLDEN=1 rewrites it."""
    if UPDATE or not path.exists():
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"golden mismatch: {path}"


def gold_rows(n: int | None = None, shortest: bool = True) -> list[dict]:
    """The shared gold_train.jsonl rows (shortest first unless `shortest=False`), the first `n`."""
    rows = [json.loads(line) for line in (SHARED / "gold_train.jsonl").read_text().splitlines()]
    if shortest:
        rows.sort(key=lambda r: len(json.dumps(r)))
    return rows[:n] if n else rows
