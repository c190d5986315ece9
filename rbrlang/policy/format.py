"""The one contract between the compiler and everything that loads its output.

A compiled policy is a folder:

    policy.json              the document below (format `FORMAT_VERSION`)
    templates/<name>.jinja   one grader prompt template per grader proposition
    weights.json             fitted reward weights (`rbrc fit`), optional
    calibration.json         fitted P(yes) calibration (`rbrc eval --calibrate`), optional

The compiler writes the first two; fitting writes the others, and a recompile
of an unchanged policy carries them over (`FITTED_FILES`). This module is the
only place that names the format version and the file names, and the only one
that reads or writes the document's bytes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import PolicyError

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


def read_document(folder) -> tuple[dict, dict[str, str]]:
    """(`policy.json` as a dict, grader proposition -> template source), with each
    template checked against the hash the compiler recorded for it."""
    folder = resolve_folder(folder)
    path = folder / POLICY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
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
    check_format(doc, path)  # before reading anything a different format may lay out differently
    templates = {}
    for p in doc.get("propositions", []) if isinstance(doc.get("propositions"), list) else []:
        if not (isinstance(p, dict) and p.get("kind") == "grader"):
            continue
        relative = Path(str(p.get("template", "")))
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise PolicyError(f"{path}: the template of `{p.get('name')}` ({p.get('template')!r}) is not a "
                              "path inside the compiled folder; recompile the policy")
        tpath = folder / relative
        try:
            text = tpath.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise PolicyError(f"{tpath}: missing or unreadable; recompile the policy")
        expected = p.get("template_sha256")
        if not isinstance(expected, str):
            raise PolicyError(f"{path}: `{p.get('name')}` records no template_sha256 for {relative}; "
                              "recompile the policy")
        if sha256(text) != expected:
            raise PolicyError(f"{tpath}: edited after compiling (its sha256 is {sha256(text)[:12]}…, "
                              f"{POLICY_FILE} records {str(expected)[:12]}…); change the `.rbr` source and "
                              "recompile instead of editing compiled templates")
        templates[p.get("name")] = text
    return doc, templates


def compiled_files(doc: Mapping[str, Any], templates: Mapping[str, str]) -> dict[str, bytes]:
    """Relative path -> bytes of a whole compiled folder (without fitted files)."""
    files = {POLICY_FILE: dump_document(doc)}
    for name, text in templates.items():
        files[template_path(name)] = text.encode("utf-8")
    return dict(sorted(files.items()))
