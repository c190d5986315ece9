"""Commands beyond the compiler's own (import, classify, grade) register here."""
from __future__ import annotations


def register(sub) -> None:
    """Add later stages' subcommands to `rbrc`."""
