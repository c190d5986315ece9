"""Locating `rbr.lark` and building the Lark parser once per process."""
from __future__ import annotations

import contextlib
import functools
import threading
from importlib import resources
from pathlib import Path

from lark import Lark

# In a source checkout the grammar lives in the top-level `grammar/` folder (the
# one source of truth); the wheel build copies it into the package.
_CHECKOUT = Path(__file__).resolve().parents[3] / "grammar" / "rbr.lark"


def grammar_text() -> str:
    shipped = resources.files("rbrlang").joinpath("grammar/rbr.lark")
    if shipped.is_file():  # an installed wheel
        return shipped.read_text(encoding="utf-8")
    return _CHECKOUT.read_text(encoding="utf-8")


_local = threading.local()


def _on_comment(token):
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(token)
    return token


@contextlib.contextmanager
def collect_comments(sink: list):
    """Comments seen by the lexer while parsing go to `sink` (for the formatter)."""
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = None


@functools.lru_cache(maxsize=None)
def parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="contextual",
                propagate_positions=True, maybe_placeholders=False,
                lexer_callbacks={"COMMENT": _on_comment})
