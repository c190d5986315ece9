"""How rbrc prints: diagnostics (human or JSON), summaries, counts."""
from __future__ import annotations

import sys
from typing import Sequence

from .. import diagnostics as dg


def report(diags: Sequence[dg.Diagnostic], sources: dict, fmt: str = "human") -> None:
    if fmt == "json":
        print(dg.to_json(diags))
        return
    if diags:
        print(dg.render_all(diags, sources), file=sys.stderr)
        print(f"\n{dg.summary(list(diags))}", file=sys.stderr)


def lines(n: int, what: str = "") -> str:
    """`1 line`, `3 bad lines`."""
    return f"{n} {what + ' ' if what else ''}line{'s' * (n != 1)}"
