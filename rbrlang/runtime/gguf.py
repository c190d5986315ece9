"""GGUF judges: llama.cpp's one-file format (weights, config, tokenizer and chat
template together), as `--grader FILE.gguf` and `HFGrader.from_pretrained("….gguf")`.

transformers loads one with `from_pretrained(folder, gguf_file=NAME)` (the
`gguf` package reads it) and dequantises every tensor to the dtype asked for:
the model in memory is a plain fp32/bf16 model, as large as the unquantised one,
and loading costs tens of seconds for a 135M model (docs/GRADERS.md has the
figures). So before that load, this module reads the file's header itself,
in milliseconds, and refuses what would fail late or silently:

- a file that is not GGUF (a text file renamed, a download that is an HTML page);
- an architecture transformers cannot dequantise (its own check comes only
  after parsing every field and, through `AutoTokenizer`, converting the vocabulary);
- no chat template, where the prompts are to be wrapped in one.

`fingerprint` is the file's identity for the grade cache (see there why it
hashes a bounded part of the file). No torch and no `gguf` package at import.
"""
from __future__ import annotations

import hashlib
import importlib.util
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import PathError, RbrError

MAGIC = b"GGUF"
SUFFIX = ".gguf"
FIX_FILE = "--grader takes a model folder, a hub id, or a GGUF file as llama.cpp writes it"

# GGUF value types (gguf-py's GGUFValueType): fixed sizes, and the two that are not.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# llama.cpp names a few architectures differently from transformers' GGUF table;
# transformers renames these (modeling_gguf_pytorch_utils.load_gguf_checkpoint) before its check.
_RENAMED = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
            "t5encoder": "t5"}


def is_gguf(name) -> bool:
    """A path that names a GGUF file (by its suffix, as llama.cpp names them)."""
    return str(name).lower().endswith(SUFFIX)


@dataclass(frozen=True)
class GGUFHeader:
    """What the file's metadata says, read without the `gguf` package."""

    path: Path
    version: int
    architecture: str
    chat_template: bool  # `tokenizer.chat_template` is there and not empty
    tokenizer: str  # `tokenizer.ggml.model`: gpt2 (byte-level BPE), llama (sentencepiece), ...
    # The tensor table: (ggml type, element count, offset in the data section) per tensor, and
    # where that section starts; with the file's size they tell a file cut inside its tensor data
    # (the header whole), which transformers would report only after tens of seconds, as a
    # numpy reshape error.
    tensors: tuple = ()
    data_start: int = 0
    size: int = 0


class _Reader:
    def __init__(self, buf):
        self.buf, self.at = buf, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> bytes:
        n = self.take("Q")
        if self.at + n > len(self.buf):
            raise struct.error("string past the end")
        s = self.buf[self.at:self.at + n]
        self.at += n
        return bytes(s)

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            inner, n = self.take("I"), self.take("Q")
            if inner in _SCALARS:  # skipped in one step: the vocabulary's scores are 50k floats
                self.at += n * struct.calcsize(_SCALARS[inner])
                if self.at > len(self.buf):
                    raise struct.error("array past the end")
                return None
            for _ in range(n):
                self.value(inner)
            return None
        raise struct.error(f"unknown value type {kind}")


def read_header(path) -> GGUFHeader:
    """The GGUF file's header, or a `PathError` naming the file: not GGUF, or cut short."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            if head != MAGIC:
                said = f"it starts with {head!r}" if head else "it is empty"
                raise PathError(path, f"cannot load grader: not a GGUF file ({said}, not b'GGUF')", FIX_FILE)
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf)
    except OSError as exc:
        if isinstance(exc, PathError):
            raise
        raise PathError.from_os(path, exc, "cannot load grader") from None


def _parse(path: Path, buf) -> GGUFHeader:
    r = _Reader(buf)
    r.at = 4
    try:
        version = r.take("I")
        if version < 2:  # v1 used 32-bit counts; llama.cpp has written v2+ since 2023
            raise PathError(path, f"cannot load grader: GGUF version {version} is too old to read", "convert it again with llama.cpp")
        n_tensors, count = r.take("Q"), r.take("Q")
        meta = {}
        for _ in range(count):
            key = r.string().decode("utf-8", "replace")
            kind = r.take("I")
            value = r.value(kind)
            if key in ("general.architecture", "tokenizer.chat_template", "tokenizer.ggml.model",
                       "general.alignment"):
                meta[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        tensors = []
        for _ in range(n_tensors):
            r.string()
            elements = 1
            for _ in range(r.take("I")):
                elements *= r.take("Q")
            tensors.append((r.take("I"), elements, r.take("Q")))
        align = meta.get("general.alignment") or 32
        data_start = -(-r.at // align) * align if isinstance(align, int) and align > 0 else r.at
    except struct.error:
        raise PathError(path, "cannot load grader: a GGUF file cut short or damaged (its header ends early)",
                        "download or convert it again") from None
    if not meta.get("general.architecture"):
        raise PathError(path, "cannot load grader: the GGUF file names no architecture (general.architecture)",
                        "convert it again with llama.cpp")
    return GGUFHeader(path, version, meta["general.architecture"], bool(meta.get("tokenizer.chat_template")),
                      str(meta.get("tokenizer.ggml.model") or ""), tuple(tensors), data_start, len(buf))


def _check_tensor_data(header: GGUFHeader) -> None:
    """The tensor table's last byte lies within the file (the header alone parsing is not enough:
    a download cut in the weights has a whole header). Sizes per ggml type come from the `gguf`
    package; a type it does not know is left to transformers."""
    from gguf.constants import GGML_QUANT_SIZES

    sizes = {int(k): v for k, v in GGML_QUANT_SIZES.items()}
    end = header.data_start
    for kind, elements, offset in header.tensors:
        if kind not in sizes:
            return
        block, nbytes = sizes[kind]
        end = max(end, header.data_start + offset + elements // block * nbytes)
    if end > header.size:
        raise PathError(header.path, f"cannot load grader: a GGUF file cut short ({header.size} bytes; its tensor "
                        f"table needs {end})", "download or convert it again")


def check_gguf(path) -> GGUFHeader:
    """The checks before transformers loads the file: it is GGUF, the `gguf`
    package is installed, and transformers can dequantise its architecture."""
    header = read_header(path)
    if importlib.util.find_spec("gguf") is None:
        raise RbrError(f"{path}: loading a GGUF file needs the gguf package: pip install 'rbrlang[gguf]'")
    from transformers import __version__
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES as supported

    arch = header.architecture
    known = set(supported) - {"general", "tokenizer"}  # the table's other keys are no architectures
    if arch not in known and _RENAMED.get(arch) not in known:
        raise PathError(path, f"cannot load grader: transformers {__version__} cannot dequantise GGUF "
                        f"architecture `{arch}` (it reads {', '.join(sorted(known))})",
                        "give the model's transformers folder or hub id instead of the GGUF file")
    _check_tensor_data(header)
    return header


def split(path) -> tuple[str, str]:
    """(folder, file name): how transformers takes a GGUF file (`gguf_file=` names it in the folder)."""
    p = Path(path).expanduser().resolve()
    return str(p.parent), p.name


# The grade cache's identity of a GGUF file: its size and modification time, and a
# SHA-256 of a bounded part of its bytes: the first MiB (the header: architecture,
# quantisation type, the tensor table, most of the vocabulary) and 16 blocks of
# 64 KiB spread evenly over the rest (every tensor of a fine-tune differs, so any
# sample sees it). About 2 MiB read whatever the file's size: a full hash of a
# 40 GB 70B judge would cost a minute at every start. Size and mtime alone are
# not enough: `unzip`, `cp -p` and `rsync -a` keep the mtime of another file of
# the same size (two quantisations of one model are often within a few bytes).
HEAD_BYTES, BLOCKS, BLOCK_BYTES = 1 << 20, 16, 1 << 16


def fingerprint(path) -> str:
    path = Path(path)
    st = path.stat()
    digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(HEAD_BYTES))
        rest = st.st_size - HEAD_BYTES
        if rest > 0:
            for k in range(BLOCKS):
                fh.seek(HEAD_BYTES + rest * k // BLOCKS)
                digest.update(fh.read(BLOCK_BYTES))
    return digest.hexdigest()


__all__ = ["GGUFHeader", "check_gguf", "fingerprint", "is_gguf", "read_header", "split"]
