"""codegen: `CheckedPolicy` → the compiled folder, byte-for-byte deterministic."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..check.model import CheckedPolicy
from .policy_json import build
from .prompts import prompt_template

__all__ = ["generate", "write_output", "stale_files"]


def generate(policy: CheckedPolicy) -> dict[str, bytes]:
    """Relative path → file bytes, for the whole compiled folder."""
    templates = {p.name: prompt_template(policy, p) for p in policy.propositions if p.kind == "grader"}
    doc = build(policy, templates)
    files = {"policy.json": (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")}
    for name, text in templates.items():
        files[f"templates/{name}.jinja"] = text.encode("utf-8")
    return dict(sorted(files.items()))


def write_output(files: dict[str, bytes], out: Path) -> None:
    """Write to a temporary sibling folder, then swap it in: a failure half
    way leaves the previous output intact, never a partial folder.

    `weights.json` is produced by fitting, not compiling: it is carried over."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        weights = out / "weights.json"
        if weights.is_file():
            shutil.copy2(weights, tmp / "weights.json")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def stale_files(files: dict[str, bytes], out: Path) -> list[str]:
    """Paths whose committed bytes differ from a fresh compile (or are extra)."""
    out = Path(out)
    stale = [rel for rel, data in files.items()
             if not (out / rel).is_file() or (out / rel).read_bytes() != data]
    if out.is_dir():
        for path in out.rglob("*"):
            rel = path.relative_to(out).as_posix()
            if path.is_file() and rel not in files and rel != "weights.json":
                stale.append(rel)
    return sorted(stale)
