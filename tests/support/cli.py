"""What tests of rbrc's output share."""
from __future__ import annotations


def one_line_error(command: str, err: str) -> str:
    """The whole of stderr is one `rbrc CMD: error: …` line; returns it."""
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"rbrc {command}: error: "), err
    return lines[0]
