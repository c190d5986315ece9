"""Source files: reading a policy's text, and the name diagnostics show for it.
(`Span`, the place a diagnostic points at, lives in the leaf `diagnostics`.)"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .diagnostics import LOSSY, Span
from .errors import SourceError
from .files import NotAFileError, read_bounded

# A policy is a few hundred lines; anything this large is a mistake (a data file
# passed by accident) and would only make the parser slow before failing.
MAX_SOURCE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class SourceFile:
    """The text of one `.rbr` file and the name diagnostics show for it."""

    path: Path
    name: str
    text: str


def display_name(path: Path) -> str:
    """Relative to the working folder when below it: short and clickable;
    otherwise as given. The working folder itself (`../here` typed from
    inside `here`) is shown as typed, not as `.`, which names nothing the user
    wrote."""
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return str(path)
    return str(relative) if relative.parts else str(path)


def read_source(path: Path, name: str | None = None) -> SourceFile:
    name = name or display_name(path)
    here = Span.point(name)
    try:
        data = read_bounded(path, MAX_SOURCE_BYTES)  # a device or FIFO can be endless
    except FileNotFoundError:
        raise SourceError("E0001", f"cannot read `{name}`: no such file",
                          "check the path", here)
    except IsADirectoryError:
        raise SourceError("E0001", f"cannot read `{name}`: it is a folder",
                          "pass a `.rbr` file", here)
    except NotAFileError as exc:
        raise SourceError("E0001", f"cannot read `{name}`: {exc.strerror}", "pass a `.rbr` file", here)
    except OSError as exc:
        raise SourceError("E0001", f"cannot read `{name}`: {exc.strerror}",
                          "check the file's permissions", here)
    if len(data) > MAX_SOURCE_BYTES:
        raise SourceError("E0002", f"file is too large (over the limit of {MAX_SOURCE_BYTES:,} bytes)",
                          "split the policy into files joined with `import`", here)
    if b"\x00" in data:
        offset = data.index(b"\x00")
        raise SourceError("E0003", "file is binary, not a policy (it contains a NUL byte)",
                          "pass a `.rbr` text file", _offset_span(name, data, offset),
                          _lossy(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError("E0003", f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                          "save the file as UTF-8", _offset_span(name, data, exc.start), _lossy(data))
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return SourceFile(path, name, text)


def _lossy(data: bytes) -> str:
    # Each byte that is not UTF-8 stays one character, shown as `\x{ff}`
    # (`diagnostics.LOSSY`): columns stay aligned with bytes around the error.
    return data.decode("utf-8", errors=LOSSY)


def _offset_span(name: str, data: bytes, offset: int) -> Span:
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return Span.point(name, line, column, offset)
