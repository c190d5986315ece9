"""codegen: `CheckedPolicy` → the compiled folder, byte-for-byte deterministic."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..check.model import CheckedPolicy
from .policy_json import build
from .templates import prompt_template
from ...files import check_output_folder, replace_folder
from ...policy.format import FITTED_FILES, POLICY_FILE, TEMPLATES_DIR, compiled_files, is_compiled_folder
from ...policy.loading import policy_from_files, stale_fitted

__all__ = ["generate", "write_output", "stale_files", "is_ours"]


def generate(policy: CheckedPolicy) -> dict[str, bytes]:
    """Relative path → file bytes, for the whole compiled folder."""
    templates = {p.name: prompt_template(policy, p) for p in policy.propositions if p.graded}
    return compiled_files(build(policy, templates), templates)


def is_ours(folder: Path) -> bool:
    """A folder `rbrc compile` wrote, holding nothing else: `policy.json`,
    `templates/*.jinja` and fitted files. Only such a folder is replaced."""
    folder = Path(folder)
    if not is_compiled_folder(folder):
        return False
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_dir() and not path.is_symlink():
            if rel.as_posix() != TEMPLATES_DIR:
                return False
        elif not (rel.as_posix() in (POLICY_FILE, *FITTED_FILES)
                  or (rel.parent.as_posix() == TEMPLATES_DIR and rel.suffix == ".jinja" and path.is_file())):
            return False
    return True


OURS = "a compiled policy folder (only policy.json, templates/ and fitted files)"


def write_output(files: dict[str, bytes], out: Path, sources: Iterable[Path] = (),
                 option: str = "`out`") -> tuple[str, ...]:
    """Write the compiled folder at `out`, replacing only a missing path, an
    empty folder or an earlier compiled folder; anything else (a source file,
    a folder of sources, any other file or folder, the working folder, a mount
    point) is refused with a `PathError`, so nothing a user has is lost.

    The folder is filled beside `out` and swapped in: a failure half way leaves
    the previous output intact and nothing else behind. Fitted files
    (`weights.json`, `calibration.json`) come from fitting, not compiling:
    they are carried over, and say themselves which schema they fit.

    Returns one line for each carried fitted file that the new policy cannot
    use (`policy.loading.stale_fitted`), for the caller to warn with. They are
    kept, not dropped: a fit can take hours, and a recompile that reverts the
    edit makes them valid again; loading refuses them meanwhile. `option`: what
    the messages call `out` (the CLI: its flag)."""
    given = Path(out)  # named as the user wrote it in the warnings
    out = check_output_folder(out, option, OURS, is_ours, sources, "the policy's source")
    stale = (stale_fitted(given, policy_from_files(files))
             if any((out / name).is_file() for name in FITTED_FILES) else ())

    def fill(tmp: Path) -> None:
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    replace_folder(out, fill, carry=FITTED_FILES)
    return stale


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
