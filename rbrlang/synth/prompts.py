"""Prompts for `rbrc synth`: one JSON object per line,

    {"prompt": [messages], "category": "C-R"}   or   {"prompt": [...], "response_type": "hard_refuse"}

routed by the one rule (`CompiledPolicy.route_item`, located by
`data.records`). Any other keys are ignored (a comparison or gold line can be
used as a prompt line). A category that routes nowhere is a warning (the
prompt gets no RBR reward, so there is nothing to generate for it); a
category the routes do not name, which the `default` route takes, too."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import diagnostics as dg
from ..errors import LineError
from ..policy import CompiledPolicy
from ..policy.format import canonical
from ..data.jsonl import key_span, read_jsonl
from ..data.records import conversation_of, response_type_of

SHAPE = '{"prompt": [{"role": "user", "content": "…"}], "category": "…"} (or "response_type": "…")'
UNROUTED = "W0432"
DEFAULTED = "W0433"


@dataclass(frozen=True)
class SynthPrompt:
    line: int
    conversation: tuple  # of {"role", "content"} dicts
    response_type: str

    @property
    def key(self) -> str:
        """What identifies the prompt in caches and groups: its canonical JSON."""
        return canonical(list(self.conversation))


def read_prompts(policy: CompiledPolicy, path: Path) -> tuple[list[SynthPrompt], list[dg.Diagnostic]]:
    """(the routed prompts, every diagnostic: errors for bad lines, warnings for unrouted ones)."""
    name = str(path)
    prompts, diags = [], []
    for number, text, row in read_jsonl(path):
        if isinstance(row, dg.Diagnostic):
            diags.append(row)
            continue
        try:
            if not isinstance(row, dict):
                raise LineError("E0301", "each line must be a JSON object")
            conversation = conversation_of(row)
            if not conversation or conversation[-1]["role"] == "assistant":
                raise LineError("E0301", "`prompt` must end with a turn the assistant replies to (not empty, "
                                "not an assistant message)", "prompt")
            rt = response_type_of(policy, row)
        except LineError as exc:
            diags.append(exc.diagnostic(name, number, text, SHAPE))
            continue
        category = row.get("category") if row.get("response_type") is None else None
        if rt is None:
            diags.append(dg.warning(UNROUTED, key_span(name, number, text, "category"),
                                    f"category {category!r} routes to no response type: nothing to generate",
                                    "add a route for it to the policy, or give `response_type`"))
            continue
        if category is not None and category not in policy.routes:
            diags.append(dg.warning(DEFAULTED, key_span(name, number, text, "category"),
                                    f"category {category!r} is not among the policy's routes: the `default` "
                                    f"route takes it to `{rt}`",
                                    "check the spelling (routes: " + ", ".join(sorted(policy.routes)) + ")"))
        prompts.append(SynthPrompt(number, tuple(conversation), rt))
    return prompts, diags
