"""codegen: `CheckedPolicy` → the compiled folder, byte-for-byte deterministic."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..check.model import CheckedPolicy
from .policy_json import build
from .templates import prompt_template
from ...policy.format import FITTED_FILES, compiled_files

__all__ = ["generate", "write_output", "stale_files"]


def generate(policy: CheckedPolicy) -> dict[str, bytes]:
    """Relative path → file bytes, for the whole compiled folder."""
    templates = {p.name: prompt_template(policy, p) for p in policy.propositions if p.kind == "grader"}
    return compiled_files(build(policy, templates), templates)


def write_output(files: dict[str, bytes], out: Path) -> None:
    """Write to a temporary sibling folder, then swap it in: a failure half
    way leaves the previous output intact, never a partial folder.

    Fitted files (`weights.json`, `calibration.json`) come from fitting, not
    compiling: they are carried over, and say themselves which schema they fit."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for rel in FITTED_FILES:
            if (out / rel).is_file():
                shutil.copy2(out / rel, tmp / rel)
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
            if path.is_file() and rel not in files and rel not in FITTED_FILES:
                stale.append(rel)
    return sorted(stale)
