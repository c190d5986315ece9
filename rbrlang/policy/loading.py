"""Loading a compiled policy: its document and templates, then the fitted files beside them.

`compiled.py` builds a `CompiledPolicy` from `policy.json`'s rows; `weights.py`
and `calibration.py` read their files and check them against a CompiledPolicy.
This module sits above all three, so none of them imports another lazily.

What a command loads depends on what it uses. A trainer's reward needs the
weights and the calibration, and must not run with ones fitted for another
schema or prompt: `load_policy` refuses those by default. Grading, classifying
and fitting itself (which replaces weights.json) use no weights, so they pass
`weights="ignore"` and are never stopped by a stale file they do not read.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from ..errors import PolicyError
from .calibration import read_calibration, stale_calibration
from .compiled import CompiledPolicy, from_document
from .format import CALIBRATION_FILE, POLICY_FILE, WEIGHTS_FILE, read_document, read_files, resolve_folder
from .weights import read_weights, stale_weights

CHECK, IGNORE = "check", "ignore"


def load_policy(folder, *, weights: str = CHECK, calibration: str = CHECK) -> CompiledPolicy:
    """Read a compiled policy folder (`rbrc compile … -o FOLDER`), or its `policy.json`.

    weights, calibration: `"check"` (the default) attaches weights.json and
    calibration.json when present, and one the policy cannot use (fitted for
    another schema, another prompt, another policy) is a `PolicyError` naming
    both hashes; `"ignore"` does not read the file (the policy then has no
    weights, or no calibration)."""
    for option, value in (("weights", weights), ("calibration", calibration)):
        if value not in (CHECK, IGNORE):
            raise ValueError(f"load_policy: {option}={value!r}; expected {CHECK!r} or {IGNORE!r}")
    doc, templates = read_document(folder)
    where = str(folder) if Path(folder).name == POLICY_FILE else str(Path(folder) / POLICY_FILE)
    policy = from_document(doc, templates, where=where)
    root = resolve_folder(folder)
    if calibration == CHECK:
        found = read_calibration(root, policy)
        if found is not None:
            policy = dataclasses.replace(policy, calibration=found)
    if weights == CHECK:
        found = read_weights(root, policy)
        if found:
            policy = dataclasses.replace(policy, weights=found)
    return policy


def policy_from_files(files: Mapping[str, bytes]) -> CompiledPolicy:
    """The CompiledPolicy of a compiled folder held in memory (relative path -> bytes), as a fresh
    compile makes it: no fitted files."""
    doc, templates = read_files(files)
    return from_document(doc, templates)


def stale_fitted(folder, policy: CompiledPolicy) -> tuple[str, ...]:
    """One line for each fitted file in `folder` that `policy` cannot use as it is,
    naming the file, what is stale and the command that refreshes it; `()` when
    there is none or they all fit. For `rbrc compile`, which keeps them: a
    recompile that only reverts an edit makes them valid again."""
    folder = Path(folder)
    lines = []
    for name, stale, fix in ((WEIGHTS_FILE, _weights_problems, "`rbrc fit` refits it"),
                             (CALIBRATION_FILE, stale_calibration, "`rbrc eval --gold FILE --calibrate` refits it")):
        if not (folder / name).is_file():
            continue
        try:
            problems = stale(folder, policy)
        except PolicyError as exc:
            lines.append(f"{exc}; it was kept")
            continue
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            lines.append(f"{folder / name}: kept, but the policy cannot use it: {problems[0]}{more}; {fix}")
    return tuple(lines)


def _weights_problems(folder: Path, policy: CompiledPolicy) -> tuple[str, ...]:
    return tuple(s.why if s.response_type is None else f"`{s.response_type}`: {s.why}"
                 for s in stale_weights(folder, policy))
