"""weights.json: fitted reward weights, per response type, bound to its schema.

    {"format": 1, "policy": "<name>",
     "response_types": {"<rt>": {"schema_hash": "…", "features": [...], "weights": [...],
                                 "bias": 0.0, "margin": 1.0, "decay": 0.001,
                                 "data_sha256": "…", "metrics": {...}}}}

`rbrc fit` writes it into the compiled folder; a recompile carries it over
(`format.FITTED_FILES`). Each entry carries the schema hash of the response
type it was fitted for: weights for a feature list that has changed would be
silently wrong, so reading them for another schema is a `PolicyError` naming
both hashes (refit then). Fitting owns the file: `stale_weights` says what in
it the policy can no longer use, and `write_weights` replaces exactly that.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Union

from ..errors import PolicyError
from ..files import write_bytes
from .format import POLICY_FILE, WEIGHTS_FILE, dump_document

if TYPE_CHECKING:
    from .compiled import CompiledPolicy

WEIGHTS_FORMAT = 1


@dataclass(frozen=True)
class FittedWeights:
    """One response type's linear reward: `features · weights + bias` (+ the RM score)."""

    response_type: str
    schema_hash: str
    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    margin: float
    decay: float
    data_sha256: str
    metrics: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict:
        return {"schema_hash": self.schema_hash, "features": list(self.features),
                "weights": [float(w) for w in self.weights], "bias": float(self.bias),
                "margin": float(self.margin), "decay": float(self.decay), "data_sha256": self.data_sha256,
                "metrics": dict(self.metrics)}


def weights_path(path) -> Path:
    """`weights.json` of a compiled folder (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        return path / WEIGHTS_FILE
    return path.parent / WEIGHTS_FILE if path.name == POLICY_FILE else path


@dataclass(frozen=True)
class StaleWeights:
    """Weights in weights.json that the policy cannot use: one response type's entry, or
    (`response_type` None) the whole file. `why` says why in a few words, with both
    schema hashes when the schema changed."""

    response_type: Optional[str]
    why: str


def read_weights(path, policy: "CompiledPolicy") -> dict[str, FittedWeights]:
    """The fitted weights in a compiled folder, checked against `policy`; `{}`
    when the folder has no weights.json. Anything the policy cannot use is a
    `PolicyError` that names the file and says to refit."""
    file = weights_path(path)
    doc = _read(file)
    if doc is None:
        return {}
    usable, stale = _entries(doc, policy)
    if stale:
        raise PolicyError(f"{file}: {_refusal(stale[0])}")
    return usable


def stale_weights(path, policy: "CompiledPolicy") -> tuple[StaleWeights, ...]:
    """What in a compiled folder's weights.json `policy` cannot use (fitted for
    another policy, another schema, a removed response type, or malformed);
    `()` when it all fits or there is no file. A file that is not JSON at all
    is a `PolicyError`: nothing proves it is ours to replace."""
    doc = _read(weights_path(path))
    return () if doc is None else _entries(doc, policy)[1]


def _read(file: Path) -> Optional[Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(f"{file}: cannot read: {reason.lower()}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(f"{file}: not valid JSON ({exc}); move it away, then refit (`rbrc fit`)")


def _entries(doc: Any, policy: "CompiledPolicy") -> tuple[dict[str, FittedWeights], tuple[StaleWeights, ...]]:
    """(the entries `policy` can use, what it cannot)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("response_types"), dict):
        return {}, (StaleWeights(None, "not a weights file (expected an object with `response_types`)"),)
    if doc.get("format") != WEIGHTS_FORMAT:
        return {}, (StaleWeights(None, f"weights format {doc.get('format')!r}; this rbrlang reads format "
                                       f"{WEIGHTS_FORMAT}"),)
    if doc.get("policy") != policy.name:
        return {}, (StaleWeights(None, f"fitted for policy `{doc.get('policy')}`, not `{policy.name}`"),)
    usable, stale = {}, []
    for name, entry in doc["response_types"].items():
        try:
            usable[name] = _entry(name, entry, policy)
        except ValueError as exc:
            stale.append(StaleWeights(name, str(exc)))
    return usable, tuple(stale)


def _entry(name: str, entry: Any, policy: "CompiledPolicy") -> FittedWeights:
    """One response type's entry, checked against the policy; ValueError says why it cannot be used."""
    if name not in policy.response_types:
        raise ValueError(f"policy `{policy.name}` has no such response type (it has "
                         f"{', '.join(policy.response_types)})")
    rt = policy.response_types[name]
    try:
        fw = FittedWeights(
            response_type=name, schema_hash=str(entry["schema_hash"]),
            features=tuple(str(f) for f in entry["features"]),
            weights=tuple(_number(w) for w in entry["weights"]), bias=_number(entry["bias"]),
            margin=_number(entry["margin"]), decay=_number(entry["decay"]),
            data_sha256=str(entry.get("data_sha256", "")), metrics=dict(entry.get("metrics") or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed entry ({type(exc).__name__}: {exc})") from None
    if fw.schema_hash != rt.schema_hash:
        raise ValueError(f"fitted for schema {fw.schema_hash}, but the policy's schema is now {rt.schema_hash} "
                         "(its features changed)")
    if fw.features != tuple(rt.features) or len(fw.weights) != len(rt.features):
        raise ValueError(f"they do not match its features ({len(fw.weights)} weights for "
                         f"{len(rt.features)} features)")
    return fw


def _refusal(stale: StaleWeights) -> str:
    if stale.response_type is None:
        return f"{stale.why}; refit (`rbrc fit`) or remove it"
    return f"weights for response type `{stale.response_type}`: {stale.why}; refit (`rbrc fit`)"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{json.dumps(value)} is not a finite number")
    return float(value)


def write_weights(folder, policy: "CompiledPolicy",
                  fitted: Union[Mapping[str, FittedWeights], Iterable[FittedWeights]]) -> Path:
    """Write (or update) `weights.json` in a compiled folder, atomically.

    Entries for other response types that still fit the policy are kept;
    whatever the policy can no longer use (`stale_weights`: another schema, a
    removed response type, another policy's file) is dropped: it could only
    fail at load. A file that is not JSON is refused (`stale_weights`)."""
    folder = Path(folder)
    file = folder / WEIGHTS_FILE
    new = dict(fitted) if isinstance(fitted, Mapping) else {fw.response_type: fw for fw in fitted}
    for name, fw in new.items():
        rt = policy.response_type(name)
        if fw.schema_hash != rt.schema_hash:
            raise PolicyError(f"weights for `{name}` fitted for schema {fw.schema_hash}, "
                              f"the policy's is {rt.schema_hash}")
    old = _read(file)
    kept = _entries(old, policy)[0] if old is not None else {}
    merged = {**kept, **new}
    doc = {"format": WEIGHTS_FORMAT, "policy": policy.name,
           "response_types": {name: merged[name].to_json() for name in policy.response_types if name in merged}}
    write_bytes(file, dump_document(doc))
    return file
