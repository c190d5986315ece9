"""Writing what a command produces without losing what a user already has,
and opening what it reads without waiting on a pipe or reading a device whole.

Every writer in rbrlang (`rbrc compile -o`, `fmt`, `import-yaml -o`,
`grade -o`, `tiny-grader`, `weights.json`, `calibration.json`) keeps the same rules:

- a path the user gave is replaced only when it is provably ours; the caller
  says what that means (an earlier output of the same command, an empty
  folder), and anything else is refused with a `PathError` that says why;
- output appears whole or not at all: it is written beside the target under a
  temporary name and renamed into place, and a failure removes the temporary
  (and any folders made for it), so nothing is left behind;
- new files and folders get the modes the umask gives (`tempfile` makes them
  0600 and 0700, which would hide a compiled policy from a trainer run by
  another user);
- `OSError`s become one-line `PathError`s naming the path and the cause.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Optional, Sequence

from .errors import PathError, UsageError


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _cannot_write(path, exc: OSError) -> PathError:
    """`cannot write: …`; where a file stands in the way of a folder
    (`-o notes.txt/out.jsonl`), name that file rather than say "not a directory"."""
    path = _shown(Path(path))
    if exc.errno == errno.ENOTDIR:
        for parent in path.parents:
            if parent.exists() and not parent.is_dir():
                return PathError(path, f"cannot write: {parent} is a file, not a folder",
                                 "give a path whose folders are folders")
    return PathError.from_os(path, exc, "cannot write")


def _shown(path: Path) -> Path:
    """A resolved output path as the user would write it: relative to the working folder when inside it."""
    try:
        return path.relative_to(Path.cwd()) if path.is_absolute() else path
    except ValueError:
        return path


def _temp_name(target: Path, tag: str) -> Path:
    return target.parent / f".{target.name}.{tag}.{os.getpid()}.{secrets.token_hex(4)}"


def sweep_stale_temporaries(target: Path, tag: str) -> list[Path]:
    """Remove what a killed writer of `target` left: files named exactly as `_temp_name`
    names them for this target, whose process is gone. Provably ours (the name holds the
    target's name, our tag, a pid and 8 hex digits), so nothing of the user's is touched;
    a live writer's temporary (its pid still running) is left alone."""
    removed = []
    prefix = f".{target.name}.{tag}."
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        rest = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
        pid, _, token = rest.partition(".")
        if not (pid.isdigit() and len(token) == 8 and all(c in "0123456789abcdef" for c in token)):
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its writer still runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):
            continue  # someone else's process, or no such pid to ask about
        try:
            if entry.is_file() and not entry.is_symlink():
                entry.unlink()
                removed.append(entry)
        except OSError:
            pass
    return removed


def make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing ancestors (umask modes); returns those it made, deepest last."""
    missing = []
    here = Path(folder)
    while not here.exists() and not here.is_symlink() and here != here.parent:
        missing.append(here)
        here = here.parent
    made: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()  # mode 0o777 & ~umask
            made.append(path)
    except OSError:
        remove_made(made)
        raise
    return made


def remove_made(made: Sequence[Path]) -> None:
    """Undo `make_parents` (only folders that are still empty)."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            return


def is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _is_empty_folder(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _named(option: str) -> tuple[str, ...]:
    """`option` is how the messages name the path: a flag (`-o`, from the CLI),
    or a library argument in backticks (`` `out` ``), which the error then
    lists in `params` for the CLI to show as its flag."""
    return (option.strip("`"),) if option.startswith("`") else ()


def _not_empty(given: str, option: str) -> None:
    """`-o ''` (an unset shell variable): Path('') is the working folder, which
    the user did not mean; a command-line mistake, not a path to refuse."""
    if not given.strip():
        raise UsageError(f"{option}: the path is empty; give a file or folder name", params=_named(option))


def check_output_folder(out, option: str, ours: str, is_ours: Callable[[Path], bool],
                        inputs: Iterable[Path] = (), input_noun: str = "an input of this command") -> Path:
    """The folder to write for `option OUT`, after refusing everything not ours.

    `ours` names what may be replaced ("a compiled policy folder");
    `inputs` are files the command reads (a folder holding one is never
    replaced). Returns the real path (symbolic links and `..` resolved): a
    link is followed, so the folder it points to is replaced and the link kept."""
    given, named = str(out), _named(option)
    _not_empty(given, option)
    out = Path(out)
    replaces = f"{option} replaces only a missing path, an empty folder or {ours}"
    if out.is_symlink() and not out.exists():
        raise PathError(given, "is a symbolic link to nothing", replaces, params=named)
    real = _real(out)
    cwd = _real(Path.cwd())
    if is_inside(cwd, real):
        what = "the working folder" if real == cwd else "a folder holding the working folder"
        raise PathError(given, f"is {what}", f"give {option} a folder of its own", params=named)
    inputs = [_real(Path(p)) for p in inputs]
    if real.exists() and not real.is_dir():
        raise PathError(given, f"is {input_noun if real in inputs else 'a file'}", replaces, params=named)
    if real.is_dir():
        if os.path.ismount(real):
            raise PathError(given, "is a mount point", f"give {option} a folder inside it", params=named)
        held = [p for p in inputs if is_inside(p, real)]
        if held:
            raise PathError(given, f"holds {held[0].name}, {input_noun}", f"give {option} a folder of its own",
                            params=named)
        try:
            empty = _is_empty_folder(real)
        except OSError as exc:
            raise PathError.from_os(given, exc, "cannot read") from None
        if not empty and not is_ours(real):
            raise PathError(given, "is a folder with other files in it", replaces, params=named)
    return real


def replace_folder(out: Path, fill: Callable[[Path], None], carry: Sequence[str] = ()) -> None:
    """Fill a fresh sibling folder, then swap it in for `out`.

    `carry` names files (relative) of the old folder to keep in the new one.
    A failure at any step leaves `out` as it was and nothing else behind."""
    out = Path(out)
    made: list[Path] = []
    tmp: Optional[Path] = None
    old: Optional[Path] = None
    done = False
    try:
        made = make_parents(out.parent)
        tmp = _temp_name(out, "new")
        tmp.mkdir()  # not mkdtemp: its 0700 ignores the umask
        fill(tmp)
        for rel in carry:
            if (out / rel).is_file():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out / rel, tmp / rel)
        if out.exists():
            old = _temp_name(out, "old")
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old, out)
                old = None
                raise
        else:
            os.rename(tmp, out)
        done = True
    except OSError as exc:
        raise _cannot_write(out, exc) from None
    finally:
        if tmp is not None and tmp.exists():  # renamed away when done
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if not done:
            remove_made(made)


def check_output_file(out, option: str, ours: str, is_ours: Callable[[Path], bool],
                      inputs: Iterable[Path] = (), refused: str = "") -> Path:
    """Refuse `option OUT` unless OUT is missing, empty, or ours; returns the path to write.

    `refused` replaces the message for an existing file that is not ours."""
    given, named = str(out), _named(option)
    _not_empty(given, option)
    out = Path(out)
    real = _real(out)
    if real.is_dir():
        raise PathError(given, "is a folder", f"give {option} a file path", params=named)
    if real.exists() and any(real == _real(Path(p)) for p in inputs):
        raise PathError(given, "is an input of this command; refused so nothing is lost",
                        f"give {option} another file", params=named)
    if real.exists() and not real.is_file():
        raise PathError(given, "is not a regular file", f"give {option} a file path", params=named)
    if real.is_file() and real.stat().st_size and not is_ours(real):
        raise PathError(given, refused or f"exists and is not {ours}; refused so nothing is lost",
                        f"give {option} another file, or remove this one first", params=named)
    return real


class AtomicFile:
    """A file written under a unique temporary name beside it, flushed to disk,
    and renamed into place on success: a reader (or a crash) sees the old file
    or the new one, never half of one, and two writers never share a temporary.

    Opening it is the check that the output can be written: it creates the
    temporary file (and missing folders) at once, so a command can open its
    output before the slow part of its work. `write` takes text (UTF-8, newlines
    as given) or bytes. `keep_mode` keeps an existing file's permission bits
    (`rbrc fmt` rewriting a script-like file)."""

    def __init__(self, path, keep_mode: bool = True):
        self.path = Path(path)
        self._made: list[Path] = []
        self._tmp = _temp_name(self.path, "partial")
        sweep_stale_temporaries(self.path, "partial")  # a killed earlier run's leftovers (issue 14 D8)
        try:
            self._made = make_parents(self.path.parent)
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        except OSError as exc:
            remove_made(self._made)
            raise _cannot_write(self.path, exc) from None
        self._fh = os.fdopen(fd, "wb")
        self._mode = None
        if keep_mode:
            try:
                self._mode = stat.S_IMODE(self.path.stat().st_mode)
            except OSError:
                pass

    def write(self, text) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        try:
            self._fh.write(data)
        except OSError as exc:
            self.discard()
            raise _cannot_write(self.path, exc) from None

    def commit(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())  # the data is on disk before the name points at it
            self._fh.close()
            if self._mode is not None:
                os.chmod(self._tmp, self._mode)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.discard()
            raise _cannot_write(self.path, exc) from None

    def discard(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass
        try:
            self._tmp.unlink()
        except OSError:
            pass
        remove_made(self._made)
        self._made = []

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_text(path, text: str) -> None:
    """Replace a file's text atomically, keeping its permission bits (following a symbolic link).

    A writable file in a folder that is not (no room for the temporary name)
    is rewritten in place, as an editor would."""
    path = Path(path)
    target = _real(path) if path.is_symlink() else path
    try:
        fh = AtomicFile(target)
    except PathError:
        if not (target.is_file() and os.access(target, os.W_OK)):
            raise
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _cannot_write(path, exc) from None
        return
    with fh:
        fh.write(text)


def write_bytes(path, data: bytes, keep_mode: bool = False) -> None:
    """Replace one file with `data`, whole or not at all (an `AtomicFile`): how
    weights.json and calibration.json are written. New files get the umask's
    mode unless `keep_mode` keeps the old file's."""
    with AtomicFile(path, keep_mode=keep_mode) as fh:
        fh.write(data)


# --- inputs --------------------------------------------------------------------------
class NotAFileError(OSError):
    """An input that is a named pipe or a socket: reading it could wait forever
    for a writer (`strerror` says which; `PathError.from_os` shows it)."""


def special_kind(mode: int) -> Optional[str]:
    """What a file of this `st_mode` is when it is neither a regular file nor a
    folder ("a named pipe", "a socket", "a device"), else None."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def open_input(path) -> BinaryIO:
    """`path` opened for binary reading without ever blocking in `open`.

    A FIFO opened for reading waits for a writer, forever if none comes, so the
    file is opened non-blocking and looked at first: a folder is an
    `IsADirectoryError`, a FIFO or socket a `NotAFileError`; anything else
    (a file, `/dev/null`, a device) is read as usual, blocking again. Other
    failures are the `OSError`s `open` raises."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        kind = special_kind(mode)
        if kind in ("a named pipe", "a socket"):
            raise NotAFileError(errno.EINVAL, f"it is {kind}, not a file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path, limit: int) -> bytes:
    """The bytes of the input at `path`, at most `limit + 1` of them: a caller
    sees that it is over `limit` without reading it whole (`/dev/zero`, a
    mistaken multi-gigabyte file). Raises what `open_input` raises."""
    with open_input(path) as fh:
        return fh.read(limit + 1)
