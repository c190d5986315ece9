"""The one contract between the compiler and everything that loads its output.

A compiled policy is a folder:

    policy.json              the document below (format `FORMAT_VERSION`)
    templates/<name>.jinja   one grader prompt template per grader proposition
    weights.json             fitted reward weights (`rbrc fit`), optional
    calibration.json         fitted P(yes) calibration (`rbrc eval --calibrate`), optional

The compiler writes the first two; fitting owns the others (`FITTED_FILES`): a
recompile carries them over, and each says itself which schema or prompt it
was fitted for, so one that a changed policy can no longer use is refused where
it is used, reported by the recompile, and replaced by the next fit. This module is the
only place that names the format version and the file names, and the only one
that reads or writes the document's bytes; its rows (`PolicyDocument` and the
row classes below) are what codegen writes and what the loader reads.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from ..errors import PolicyError
from . import logic

FORMAT_VERSION = 1
POLICY_FILE = "policy.json"
TEMPLATES_DIR = "templates"
WEIGHTS_FILE = "weights.json"
CALIBRATION_FILE = "calibration.json"
FITTED_FILES = (WEIGHTS_FILE, CALIBRATION_FILE)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical(obj) -> str:
    """The JSON spelling that hashes are taken over: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def template_path(proposition: str) -> str:
    return f"{TEMPLATES_DIR}/{proposition}.jinja"


def dump_document(doc: Mapping[str, Any]) -> bytes:
    """The bytes of `policy.json` (and of the fitted files): indented for review, deterministic."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def is_compiled_folder(path: Path) -> bool:
    """A folder `rbrc compile` made: it holds a `policy.json` with a format number."""
    try:
        doc = json.loads((Path(path) / POLICY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("format"), int) and "propositions" in doc


def resolve_folder(path) -> Path:
    """The compiled folder for a path a user gave: the folder, or its `policy.json`."""
    if isinstance(path, str) and not path.strip():  # an unset shell variable: not "the working folder"
        raise PolicyError("the compiled policy's path is empty; give the folder `rbrc compile POLICY.rbr -o FOLDER` "
                          "made")
    path = Path(path)
    if path.name == POLICY_FILE and path.is_file():
        return path.parent
    if path.suffix == ".rbr" and not path.is_dir():
        raise PolicyError(f"{path} is a policy source, not a compiled policy; compile it first "
                          f"(`rbrc compile {path} -o compiled/NAME`) and load that folder, or use "
                          "`rbrlang.compile_file` to compile in memory")
    if path.is_file():
        raise PolicyError(f"{path} is a file; a compiled policy is a folder holding {POLICY_FILE} "
                          f"(`rbrc compile POLICY.rbr -o FOLDER` makes one)")
    if not path.exists():
        raise PolicyError(f"{path}: no such folder; give the folder `rbrc compile POLICY.rbr -o FOLDER` made")
    return path


def check_format(doc, path) -> None:
    """`doc` is a compiled policy document of the format this rbrlang reads."""
    version = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(version, int) or isinstance(version, bool):
        raise PolicyError(f"{path}: not a compiled policy (expected a JSON object with a format number); "
                          "compile the policy with `rbrc compile POLICY.rbr -o FOLDER`")
    if version > FORMAT_VERSION:
        raise PolicyError(f"{path}: format {version} is from a newer rbrlang (this one reads format "
                          f"{FORMAT_VERSION}): upgrade rbrlang, or recompile the policy with this one")
    if version != FORMAT_VERSION:
        raise PolicyError(f"{path}: format {version}; this rbrlang reads format {FORMAT_VERSION}: "
                          "recompile the policy")


# --- the document's rows -------------------------------------------------------------------------------------
# Every row is a frozen dataclass with `to_json` (what codegen writes, key order
# included: the compiled bytes are the contract) and `from_json` (what the loader
# reads, every type checked, so a hand-edited or truncated document is one
# located `PolicyError`, never a KeyError in the middle of a reward).

GRADER, MATCHES = "grader", "matches"
_MISSING = object()


class At:
    """Where a value sits in `policy.json` (`response_types[2].classes[0].dd`), for the error
    that says it is bad. The path is spelled only then: a document is read far more often than
    it is wrong."""

    __slots__ = ("file", "parent", "key")

    def __init__(self, file: str, parent: Optional["At"] = None, key: Union[str, int, None] = None):
        self.file, self.parent, self.key = file, parent, key

    def __truediv__(self, key: Union[str, int]) -> "At":
        return At(self.file, self, key)

    @property
    def path(self) -> str:
        keys, here = [], self
        while here.parent is not None:
            keys.append(here.key)
            here = here.parent
        out = ""
        for key in reversed(keys):
            out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
        return out

    def error(self, what: str) -> PolicyError:
        return PolicyError(f"{self.file}: malformed compiled policy ({self.path or 'the document'}: {what}); "
                           "recompile it")


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _object(value, at: At) -> dict:
    if not isinstance(value, dict):
        raise at.error(f"expected an object, got {_shown(value)}")
    return value


def _get(obj: dict, key: str, at: At, ok: Callable[[Any], bool], what: str, default=_MISSING):
    if key not in obj:
        if default is _MISSING:
            raise (at / key).error("missing")
        return default
    value = obj[key]
    if not ok(value):
        raise (at / key).error(f"expected {what}, got {_shown(value)}")
    return value


def _str(obj: dict, key: str, at: At, default=_MISSING) -> str:
    return _get(obj, key, at, _is_str, "a string", default)


def _list(obj: dict, key: str, at: At, default=_MISSING) -> list:
    return _get(obj, key, at, lambda v: isinstance(v, list), "a list", default)


def _strs(obj: dict, key: str, at: At, default=_MISSING, nonempty: bool = False) -> tuple[str, ...]:
    ok = (lambda v: isinstance(v, list) and all(map(_is_str, v)) and (bool(v) or not nonempty))
    return tuple(_get(obj, key, at, ok, "a non-empty list of strings" if nonempty else "a list of strings",
                      default))


def _formula(value, at: At) -> logic.Formula:
    """A formula as `logic.to_json` spells it: a name, or {"not": f}, {"and": [...]}, {"or": [...]}."""
    if isinstance(value, str):
        return logic.Ref(value)
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if key == "not":
            return logic.Not(_formula(inner, at / "not"))
        if key in ("and", "or") and isinstance(inner, list):
            operands = tuple(_formula(o, at / key / i) for i, o in enumerate(inner))
            return logic.And(operands) if key == "and" else logic.Or(operands)
    raise at.error(f"expected a formula (a name, or an object with `not`, `and` or `or`), got {_shown(value)}")


def _diagram(value, at: At) -> logic.DecisionDiagram:
    """A decision diagram whose every node names a variable it has and earlier nodes only: one pass in
    order evaluates it (see `logic.DecisionDiagram`), and no index is out of range at reward time."""
    obj = _object(value, at)
    variables = _strs(obj, "variables", at)
    n = len(variables)
    nodes = []
    for i, node in enumerate(_list(obj, "nodes", at)):
        # `type(x) is int`: a bool is no node id
        if not (type(node) is list and len(node) == 3 and type(node[0]) is int and type(node[1]) is int
                and type(node[2]) is int and 0 <= node[0] < n and 0 <= node[1] < i + 2 and 0 <= node[2] < i + 2):
            raise (at / "nodes" / i).error(f"expected [variable, low, high] naming one of its {n} "
                                           f"variables and nodes before it, got {_shown(node)}")
        nodes.append(tuple(node))
    root = _get(obj, "root", at, lambda v: _is_int(v) and 0 <= v < len(nodes) + 2,
                f"a node id from 0 to {len(nodes) + 1}")
    return logic.DecisionDiagram(variables, tuple(nodes), root)


@dataclass(frozen=True)
class GraderRow:
    """`"grader"`: the prompt template the policy's grader block chose, the answer
    spellings read as yes and as no, and the grader's chat turns around the prompt:
    a system message and the answer turn's start (absent: none, and the row is
    written without them, as before they existed)."""

    template: str
    yes: tuple[str, ...]
    no: tuple[str, ...]
    system: str = ""
    prefill: str = ""

    def to_json(self) -> dict:
        out = {"template": self.template, "yes": list(self.yes), "no": list(self.no)}
        out.update({k: v for k, v in (("system", self.system), ("prefill", self.prefill)) if v})
        return out

    @classmethod
    def from_json(cls, value, at: At) -> "GraderRow":
        obj = _object(value, at)
        return cls(_str(obj, "template", at), _strs(obj, "yes", at, nonempty=True), _strs(obj, "no", at, nonempty=True),
                   _str(obj, "system", at, ""), _str(obj, "prefill", at, ""))


@dataclass(frozen=True)
class PropositionRow:
    """One proposition: a grader question (its template's path and sha256) or a `matches` regex."""

    name: str
    kind: str  # GRADER or MATCHES
    question: str = ""
    template: str = ""  # grader: the template's path inside the compiled folder
    template_sha256: str = ""
    pattern: str = ""  # matches: the RE2 pattern and its flags
    flags: str = ""
    instruct: str = ""  # grader: `instruct "…"`, what a generator is told (rbrc synth); "" = the question

    @property
    def graded(self) -> bool:
        return self.kind == GRADER

    def to_json(self) -> dict:
        if self.graded:
            row = {"name": self.name, "kind": GRADER, "question": self.question, "template": self.template,
                   "template_sha256": self.template_sha256}
            if self.instruct:  # only when written: policies without `instruct` compile to the same bytes
                row["instruct"] = self.instruct
            return row
        return {"name": self.name, "kind": MATCHES, "pattern": self.pattern, "flags": self.flags}

    @classmethod
    def from_json(cls, value, at: At) -> "PropositionRow":
        obj = _object(value, at)
        name = _str(obj, "name", at)
        kind = _get(obj, "kind", at, lambda v: v in (GRADER, MATCHES), f"`{GRADER}` or `{MATCHES}`")
        if kind == GRADER:
            return cls(name, kind, question=_str(obj, "question", at, ""), template=_str(obj, "template", at),
                       template_sha256=_str(obj, "template_sha256", at), instruct=_str(obj, "instruct", at, ""))
        return cls(name, kind, pattern=_str(obj, "pattern", at), flags=_str(obj, "flags", at, ""))


@dataclass(frozen=True)
class DefineRow:
    name: str
    expr: logic.Formula

    def to_json(self) -> dict:
        return {"name": self.name, "expr": logic.to_json(self.expr)}

    @classmethod
    def from_json(cls, value, at: At) -> "DefineRow":
        obj = _object(value, at)
        return cls(_str(obj, "name", at), _formula(_get(obj, "expr", at, lambda v: True, ""), at / "expr"))


@dataclass(frozen=True)
class ClassRow:
    """One class of a response type: its formula as written, the decision diagram of that formula
    over the policy's propositions (what the loader uses), and its reward before any fit."""

    name: str
    expr: Optional[logic.Formula]  # None only in documents that never had it
    dd: logic.DecisionDiagram
    score: Optional[float] = None  # None: a compiler before class scores (evenly spaced then)

    def to_json(self) -> dict:
        return {"name": self.name, "expr": None if self.expr is None else logic.to_json(self.expr),
                "dd": self.dd.to_json(), "score": self.score}

    @classmethod
    def from_json(cls, value, at: At) -> "ClassRow":
        obj = _object(value, at)
        expr = obj.get("expr")
        return cls(_str(obj, "name", at), None if expr is None else _formula(expr, at / "expr"),
                   _diagram(_get(obj, "dd", at, lambda v: True, ""), at / "dd"),
                   _get(obj, "score", at, lambda v: v is None or _is_number(v), "a finite number", None))


@dataclass(frozen=True)
class ResponseTypeRow:
    """One response type: its classes (best first), its features in schema order (its
    propositions, then its classes), the hash that binds fitted weights to them, and
    its rank order for fitting."""

    name: str
    classes: tuple[ClassRow, ...]
    propositions: tuple[str, ...]
    features: tuple[str, ...]
    ranks: tuple[tuple[tuple[str, ...], ...], ...]
    labels: tuple[str, ...]
    schema_hash: str

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def to_json(self) -> dict:
        return {"name": self.name, "classes": [c.to_json() for c in self.classes],
                "propositions": list(self.propositions), "features": list(self.features),
                "ranks": [[list(group) for group in chain] for chain in self.ranks], "labels": list(self.labels),
                "schema_hash": self.schema_hash}

    @classmethod
    def from_json(cls, value, at: At) -> "ResponseTypeRow":
        obj = _object(value, at)
        rows = _get(obj, "classes", at, lambda v: isinstance(v, list) and bool(v), "a non-empty list")
        classes = tuple(ClassRow.from_json(c, at / "classes" / i) for i, c in enumerate(rows))
        if len({c.score is None for c in classes}) > 1:
            raise (at / "classes").error("some classes have a score and some do not")
        ranks = _get(obj, "ranks", at, lambda v: isinstance(v, list) and all(
            isinstance(chain, list) and all(isinstance(g, list) and all(map(_is_str, g)) for g in chain)
            for chain in v), "a list of chains of lists of labels")
        row = cls(_str(obj, "name", at), classes, _strs(obj, "propositions", at), _strs(obj, "features", at),
                  tuple(tuple(tuple(g) for g in chain) for chain in ranks), _strs(obj, "labels", at),
                  _str(obj, "schema_hash", at))
        if row.features != row.propositions + row.class_names:  # the schema order every tensor relies on
            raise (at / "features").error("expected its `propositions`, then its classes, in that order")
        return row


@dataclass(frozen=True)
class PolicyDocument:
    """`policy.json` of format `FORMAT_VERSION`, every row typed. `routes` maps a request
    category to a response type; `default_route` is where the others go (None: no reward)."""

    policy: str
    description: str
    compiler: str
    source_sha256: str
    grader: GraderRow
    propositions: tuple[PropositionRow, ...]
    defines: tuple[DefineRow, ...]
    class_order: tuple[str, ...]
    response_types: tuple[ResponseTypeRow, ...]
    routes: Mapping[str, str] = field(hash=False)
    default_route: Optional[str]

    def to_json(self) -> dict:
        return {
            "format": FORMAT_VERSION, "policy": self.policy, "description": self.description,
            "compiler": self.compiler, "source_sha256": self.source_sha256, "grader": self.grader.to_json(),
            "propositions": [p.to_json() for p in self.propositions],
            "defines": [d.to_json() for d in self.defines], "class_order": list(self.class_order),
            "response_types": [r.to_json() for r in self.response_types], "routes": dict(self.routes),
            "default_route": self.default_route,
        }

    @classmethod
    def from_json(cls, value, where: str = POLICY_FILE) -> "PolicyDocument":
        """The document, checked: its format (`check_format`, the one place), each row's
        types, and that every name a row refers to is defined."""
        check_format(value, where)
        try:
            return cls._rows(value, At(where))
        except RecursionError:  # a formula nested deeper than Python recurses
            raise At(where).error("nested too deeply") from None

    @classmethod
    def _rows(cls, value: dict, at: At) -> "PolicyDocument":
        props = tuple(PropositionRow.from_json(p, at / "propositions" / i)
                      for i, p in enumerate(_list(value, "propositions", at)))
        rts = tuple(ResponseTypeRow.from_json(r, at / "response_types" / i)
                    for i, r in enumerate(_list(value, "response_types", at)))
        routes = _get(value, "routes", at, lambda v: isinstance(v, dict) and all(map(_is_str, v.values())),
                      "an object of response type names")
        doc = cls(policy=_str(value, "policy", at), description=_str(value, "description", at, ""),
                  compiler=_str(value, "compiler", at, ""), source_sha256=_str(value, "source_sha256", at, ""),
                  grader=GraderRow.from_json(_get(value, "grader", at, lambda v: True, ""), at / "grader"),
                  propositions=props,
                  defines=tuple(DefineRow.from_json(d, at / "defines" / i)
                                for i, d in enumerate(_list(value, "defines", at, []))),
                  class_order=_strs(value, "class_order", at), response_types=rts, routes=dict(routes),
                  default_route=_get(value, "default_route", at, lambda v: v is None or _is_str(v),
                                     "a response type name or null", None))
        doc._check_names(at)
        return doc

    def _check_names(self, at: At) -> None:
        """Names one row uses and another defines: a miss here would be a KeyError at reward time."""
        names = [p.name for p in self.propositions]
        _unique(names, at / "propositions")
        _unique([r.name for r in self.response_types], at / "response_types")
        known = set(names)
        for i, rt in enumerate(self.response_types):
            here = at / "response_types" / i
            _known(rt.propositions, known, here / "propositions", "proposition")
            for j, c in enumerate(rt.classes):
                _known(c.dd.variables, known, here / "classes" / j / "dd" / "variables", "proposition")
        targets = {r.name for r in self.response_types}
        _known(self.routes.values(), targets, at / "routes", "response type")
        if self.default_route is not None:
            _known((self.default_route,), targets, at / "default_route", "response type")


def _unique(names: Sequence[str], at: At) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise at.error(f"`{name}` twice")
        seen.add(name)


def _known(names: Iterable[str], known: set, at: At, what: str) -> None:
    for name in names:
        if name not in known:
            raise at.error(f"no {what} `{name}`")


# --- reading and writing the folder --------------------------------------------------------------------------
def read_document(folder) -> tuple[PolicyDocument, dict[str, str]]:
    """(`policy.json`'s rows, grader proposition -> template source), with each
    template checked against the hash the compiler recorded for it."""
    folder = resolve_folder(folder)
    path = folder / POLICY_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if any(folder.iterdir()):  # a folder of something else: compiling into it would be refused
            inside = sorted(str(sub) for sub in folder.iterdir() if (sub / POLICY_FILE).is_file())
            hint = (f"did you mean {' or '.join(inside[:3])}?" if inside else
                    "give the folder `rbrc compile POLICY.rbr -o FOLDER` made")
            raise PolicyError(f"{folder}: not a compiled policy folder (it has no {POLICY_FILE}); {hint}")
        raise PolicyError(f"{path}: not found; compile the policy first (`rbrc compile POLICY.rbr -o {folder}`)")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{path}: not valid JSON ({exc}); recompile the policy")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {(exc.strerror or str(exc)).lower()}")
    except RecursionError:
        raise PolicyError(f"{path}: not valid JSON (nested too deeply); recompile the policy")
    doc = PolicyDocument.from_json(raw, str(path))
    return doc, _templates(doc, str(path), folder, lambda rel: (folder / rel).read_text(encoding="utf-8"))


def read_files(files: Mapping[str, bytes]) -> tuple[PolicyDocument, dict[str, str]]:
    """`read_document` for a compiled folder held in memory (relative path -> bytes, as codegen makes it)."""
    try:
        raw = json.loads(files[POLICY_FILE])
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{POLICY_FILE}: missing or not valid JSON ({exc}); recompile the policy")
    doc = PolicyDocument.from_json(raw, POLICY_FILE)
    return doc, _templates(doc, POLICY_FILE, Path(), lambda rel: files[rel.as_posix()].decode("utf-8"))


def _templates(doc: PolicyDocument, where: str, folder: Path, read: Callable[[Path], str]) -> dict[str, str]:
    templates = {}
    for row in doc.propositions:
        if not row.graded:
            continue
        relative = Path(row.template)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise PolicyError(f"{where}: the template of `{row.name}` ({row.template!r}) is not a "
                              "path inside the compiled folder; recompile the policy")
        tpath = folder / relative
        try:
            text = read(relative)
        except (OSError, UnicodeDecodeError, KeyError):
            raise PolicyError(f"{tpath}: missing or unreadable; recompile the policy")
        if sha256(text) != row.template_sha256:
            raise PolicyError(f"{tpath}: edited after compiling (its sha256 is {sha256(text)[:12]}…, "
                              f"{POLICY_FILE} records {row.template_sha256[:12]}…); change the `.rbr` source and "
                              "recompile instead of editing compiled templates")
        templates[row.name] = text
    return templates


def compiled_files(doc: PolicyDocument, templates: Mapping[str, str]) -> dict[str, bytes]:
    """Relative path -> bytes of a whole compiled folder (without fitted files)."""
    files = {POLICY_FILE: dump_document(doc.to_json())}
    for name, text in templates.items():
        files[template_path(name)] = text.encode("utf-8")
    return dict(sorted(files.items()))
