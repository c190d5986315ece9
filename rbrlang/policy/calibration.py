"""`calibration.json`: per-proposition Platt maps of the grader's P(yes).

    P_cal = sigmoid(coef * logit(clip(p, 1e-6, 1 - 1e-6)) + intercept)

`rbrc eval --calibrate` fits the maps on a human-labelled gold set (with
scikit-learn, in `rbrlang.evaluate`); this module only reads, checks, applies
and writes them, so a trainer needs neither scikit-learn nor scipy: a map is
two numbers. Each map is bound to the sha256 of its proposition's compiled
template: a calibration fitted for one prompt says nothing about another, so a
mismatch is an error at load time, naming both hashes (`stale_calibration` says
what a recompile left stale, without refusing).

    {"format": 1, "policy": NAME, "method": "platt",
     "propositions": {NAME: {"template_sha256": HEX, "coef": c, "intercept": b, "metrics": {...}}}}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..errors import PolicyError
from ..files import write_bytes
from .format import CALIBRATION_FILE, dump_document, sha256

if TYPE_CHECKING:
    from .compiled import CompiledPolicy

CALIBRATION_FORMAT = 1
METHOD = "platt"
EPS = 1e-6  # P(yes) is clipped to [EPS, 1 - EPS] before the logit: 0 and 1 map to finite values


@dataclass(frozen=True)
class PlattMap:
    proposition: str
    template_sha256: str
    coef: float
    intercept: float
    metrics: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict:
        return {"template_sha256": self.template_sha256, "coef": self.coef, "intercept": self.intercept,
                "metrics": dict(self.metrics)}


@dataclass(frozen=True)
class Calibration:
    policy: str
    maps: Mapping[str, PlattMap] = field(hash=False)  # proposition name -> its map
    method: str = METHOD

    def apply(self, names, probs):
        """`[N, P]` P(yes) (columns in `names` order) with each calibrated column
        mapped; other columns unchanged. Torch in, torch out; otherwise NumPy."""
        index = [(j, self.maps[n]) for j, n in enumerate(names) if n in self.maps]
        try:
            import torch
        except ImportError:  # pragma: no cover - the trainer side always has torch
            torch = None
        if torch is not None and torch.is_tensor(probs):
            out = probs.clone()
            for j, m in index:
                z = torch.logit(probs[:, j].clamp(EPS, 1 - EPS))
                out[:, j] = torch.sigmoid(m.coef * z + m.intercept)
            return out
        import numpy as np

        out = np.array(probs, dtype=float, copy=True)
        for j, m in index:
            p = np.clip(out[:, j], EPS, 1 - EPS)
            out[:, j] = platt(np.log(p / (1 - p)), m.coef, m.intercept)
        return out

    def to_json(self) -> dict:
        return {"format": CALIBRATION_FORMAT, "policy": self.policy, "method": self.method,
                "propositions": {n: m.to_json() for n, m in sorted(self.maps.items())}}


def platt(z, coef: float, intercept: float):
    """sigmoid(coef * z + intercept) on a NumPy array, without overflow warnings."""
    import numpy as np

    x = coef * np.asarray(z, dtype=float) + intercept
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def template_hash(policy: "CompiledPolicy", proposition: str) -> str:
    """The sha256 of a grader proposition's compiled template (what a map is bound to),
    with the grader's chat turns when the policy has any (they change P(yes) too)."""
    template = policy.proposition(proposition).template
    if policy.system or policy.prefill:
        return sha256(json.dumps([template, policy.system, policy.prefill]))
    return sha256(template)


# In the library's words (`evaluate(…, calibrate=True)` fits it); the CLI names the command.
REDO = "refit it on a gold set (`calibrate=True`), or delete the file"
REDO_PARAMS = ("calibrate",)


def read_calibration(folder, policy: "CompiledPolicy") -> Optional[Calibration]:
    """`folder/calibration.json` checked against `policy`, or None when there is none."""
    path = Path(folder) / CALIBRATION_FILE
    doc = _read(path)
    return None if doc is None else from_json(doc, policy, where=str(path))


def stale_calibration(folder, policy: "CompiledPolicy") -> tuple[str, ...]:
    """What in `folder/calibration.json` `policy` cannot use (the whole file, or the
    maps of propositions whose prompt changed), a few words each; `()` when it
    all fits or there is none. A file that cannot be read is a `PolicyError`."""
    doc = _read(Path(folder) / CALIBRATION_FILE)
    return () if doc is None else tuple(why for _, why in _maps(doc, policy)[1])


def _read(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(f"{path}: not valid JSON ({exc}); {REDO}", params=REDO_PARAMS)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {(exc.strerror or str(exc)).lower()}")


def from_json(doc: Any, policy: "CompiledPolicy", where: str = CALIBRATION_FILE) -> Calibration:
    maps, problems = _maps(doc, policy)
    if problems:
        raise PolicyError(f"{where}: {problems[0][1]}; {REDO}", params=REDO_PARAMS)
    return Calibration(policy.name, maps)


def _maps(doc: Any, policy: "CompiledPolicy") -> tuple[dict[str, PlattMap], list[tuple[Optional[str], str]]]:
    """(the maps `policy` can use, [(proposition or None for the whole file, why not)])."""
    if not isinstance(doc, dict) or doc.get("format") != CALIBRATION_FORMAT:
        return {}, [(None, f"not a calibration of format {CALIBRATION_FORMAT}")]
    if doc.get("method") != METHOD:
        return {}, [(None, f"method {doc.get('method')!r}; this rbrlang applies `{METHOD}`")]
    if doc.get("policy") != policy.name:
        return {}, [(None, f"calibrates policy `{doc.get('policy')}`, not `{policy.name}`")]
    rows = doc.get("propositions")
    if not isinstance(rows, dict):
        return {}, [(None, "`propositions` must be an object")]
    graders = {p.name for p in policy.propositions if p.graded}
    maps, problems = {}, []
    for name, row in rows.items():
        if name not in graders:
            problems.append((name, f"`{name}` is no grader proposition of policy `{policy.name}`"))
            continue
        if not isinstance(row, dict) or not all(_finite(row.get(k)) for k in ("coef", "intercept")):
            problems.append((name, f"`{name}` needs finite numbers `coef` and `intercept`"))
            continue
        recorded, current = str(row.get("template_sha256", "")), template_hash(policy, name)
        if recorded != current:
            problems.append((name, f"`{name}` was calibrated for template sha256 {recorded or '(none)'}, but the "
                                   f"compiled template has sha256 {current}: the prompt changed"))
            continue
        metrics = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
        maps[name] = PlattMap(name, recorded, float(row["coef"]), float(row["intercept"]), metrics)
    return maps, problems


def write_calibration(folder, calibration: Calibration) -> Path:
    """Write `folder/calibration.json`, whole or not at all (`files.write_bytes`)."""
    path = Path(folder) / CALIBRATION_FILE
    write_bytes(path, dump_document(calibration.to_json()))
    return path


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
