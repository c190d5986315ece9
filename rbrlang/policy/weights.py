"""weights.json: fitted reward weights, per response type, bound to its schema.

    {"format": 1, "policy": "<name>",
     "response_types": {"<rt>": {"schema_hash": "…", "features": [...], "weights": [...],
                                 "bias": 0.0, "margin": 1.0, "decay": 0.001,
                                 "data_sha256": "…", "metrics": {...}}}}

`rbrc fit` writes it into the compiled folder; a recompile carries it over
(`format.FITTED_FILES`). Each entry carries the schema hash of the response
type it was fitted for: weights for a feature list that has changed would be
silently wrong, so reading them for another schema is a `PolicyError` naming
both hashes (refit then).
"""
from __future__ import annotations

import json
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Union

from ..errors import PathError, PolicyError
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


def read_weights(path, policy: "CompiledPolicy") -> dict[str, FittedWeights]:
    """The fitted weights in a compiled folder, checked against `policy`; `{}`
    when the folder has no weights.json."""
    file = weights_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(f"{file}: cannot read: {reason.lower()}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{file}: not valid JSON ({exc}); refit (`rbrc fit`) or remove it")
    return _parse(doc, policy, str(file))


def _parse(doc: Any, policy: "CompiledPolicy", where: str) -> dict[str, FittedWeights]:
    if not isinstance(doc, dict) or not isinstance(doc.get("response_types"), dict):
        raise PolicyError(f"{where}: not a weights file (expected an object with `response_types`); "
                          "refit (`rbrc fit`) or remove it")
    if doc.get("format") != WEIGHTS_FORMAT:
        raise PolicyError(f"{where}: weights format {doc.get('format')!r}; this rbrlang reads format "
                          f"{WEIGHTS_FORMAT}: refit (`rbrc fit`)")
    if doc.get("policy") != policy.name:
        raise PolicyError(f"{where}: fitted for policy `{doc.get('policy')}`, not `{policy.name}`; "
                          "refit (`rbrc fit`) or remove it")
    out = {}
    for name, entry in doc["response_types"].items():
        if name not in policy.response_types:
            raise PolicyError(f"{where}: weights for response type `{name}`, which policy `{policy.name}` "
                              f"does not have (it has {', '.join(policy.response_types)}); refit (`rbrc fit`)")
        rt = policy.response_types[name]
        try:
            fw = FittedWeights(
                response_type=name, schema_hash=str(entry["schema_hash"]),
                features=tuple(str(f) for f in entry["features"]),
                weights=tuple(_number(w) for w in entry["weights"]), bias=_number(entry["bias"]),
                margin=_number(entry["margin"]), decay=_number(entry["decay"]),
                data_sha256=str(entry.get("data_sha256", "")), metrics=dict(entry.get("metrics") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PolicyError(f"{where}: response type `{name}`: malformed entry ({type(exc).__name__}: {exc}); "
                              "refit (`rbrc fit`)")
        if fw.schema_hash != rt.schema_hash:
            raise PolicyError(f"{where}: weights for response type `{name}` were fitted for schema "
                              f"{fw.schema_hash}, but the policy's schema is now {rt.schema_hash} "
                              "(its features changed); refit (`rbrc fit`)")
        if fw.features != tuple(rt.features) or len(fw.weights) != len(rt.features):
            raise PolicyError(f"{where}: weights for response type `{name}` do not match its features "
                              f"({len(fw.weights)} weights for {len(rt.features)} features); refit (`rbrc fit`)")
        out[name] = fw
    return out


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{json.dumps(value)} is not a finite number")
    return float(value)


def write_weights(folder, policy: "CompiledPolicy",
                  fitted: Union[Mapping[str, FittedWeights], Iterable[FittedWeights]]) -> Path:
    """Write (or update) `weights.json` in a compiled folder, atomically.

    Entries for other response types that still fit the policy are kept;
    entries the policy can no longer use (another schema, a removed response
    type) are dropped: they could only fail at load."""
    folder = Path(folder)
    file = folder / WEIGHTS_FILE
    new = dict(fitted) if isinstance(fitted, Mapping) else {fw.response_type: fw for fw in fitted}
    for name, fw in new.items():
        rt = policy.response_type(name)
        if fw.schema_hash != rt.schema_hash:
            raise PolicyError(f"weights for `{name}` fitted for schema {fw.schema_hash}, "
                              f"the policy's is {rt.schema_hash}")
    kept = {}
    if file.exists():
        try:
            old = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyError(f"{file}: exists but cannot be read ({exc}); move it away to refit")
        entries = old.get("response_types") if isinstance(old, dict) and old.get("policy") == policy.name else {}
        for name, entry in (entries or {}).items():
            if name in new or name not in policy.response_types:
                continue
            try:
                kept.update(_parse({**old, "response_types": {name: entry}}, policy, str(file)))
            except PolicyError:
                continue  # stale: fitted for another schema
    merged = {**kept, **new}
    doc = {"format": WEIGHTS_FORMAT, "policy": policy.name,
           "response_types": {name: merged[name].to_json() for name in policy.response_types if name in merged}}
    _atomic_write(file, dump_document(doc))
    return file


def _atomic_write(file: Path, data: bytes) -> None:
    """A temporary sibling (umask modes), renamed over the target: readers see
    the old file or the new one, never half of one."""
    tmp = file.parent / f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, file)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise PathError.from_os(file, exc, "cannot write") from None
