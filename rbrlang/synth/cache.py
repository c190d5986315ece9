"""The generation cache: every reply a generator gave, so that a killed
`rbrc synth` picks up where it stopped and a rerun asks for nothing twice.

An append-only JSON-lines file. Its first line says whose it is, so that a
file that is not ours is never appended to; each further line is one request's
replies under its key: a digest of the generator's identity, the prompt, the
response type and class, the instruction text, the round (try) and the seed.
Each line is flushed to disk before the replies are used: a kill loses at most
the request in flight, and a torn last line (a kill mid-write) is ignored.
Grades are not kept here: the grade cache (runtime/cache.py) keeps them."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from ..errors import PathError

HEADER = {"rbrc_synth_generations": 1}


def request_key(identity: str, prompt: str, response_type: str, name: str, instruction: str, round_: int,
                seed: int, n: int) -> str:
    parts = [identity, prompt, response_type, name, instruction, round_, seed, n]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def is_cache_file(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.loads(fh.readline()) == HEADER
    except (OSError, ValueError):
        return False


class GenerationCache:
    """`get(key)` -> replies or None; `put(key, replies)` appends and syncs."""

    def __init__(self, path, option: str = "--generations"):
        self.path = Path(path)
        self.entries: dict[str, list[str]] = {}
        self.loaded = 0
        self.torn = 0
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not is_cache_file(self.path):
            raise PathError(str(self.path), "exists and is not an `rbrc synth` generation cache; refused so nothing "
                            "is lost", f"give {option} another file, or remove this one first")
        if exists:
            with open(self.path, "rb") as fh:
                lines = fh.read().split(b"\n")[1:]
            for raw in lines:
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                    self.entries[row["key"]] = list(row["replies"])
                    self.loaded += 1
                except (ValueError, KeyError, TypeError):
                    self.torn += 1  # a line a kill cut short
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")
            if not exists:
                self._write(HEADER)
            elif not lines[-1:] == [b""]:
                self._fh.write(b"\n")  # after a torn line, start a fresh one
        except OSError as exc:
            raise PathError.from_os(str(self.path), exc, "cannot write") from None

    def _write(self, obj) -> None:
        self._fh.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def get(self, key: str) -> Optional[list[str]]:
        return self.entries.get(key)

    def put(self, key: str, replies) -> None:
        self.entries[key] = list(replies)
        self._write({"key": key, "replies": list(replies)})

    def close(self) -> None:
        self._fh.close()
