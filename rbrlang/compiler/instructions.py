"""Class instructions: what a generator is told to write so that a reply lands
in one class of a response type (`rbrc synth`, `rbrc explain --synth`).

A class's formula, as its irredundant prime implicants (the sum of products
`rbrc explain` prints), is a list of alternative cubes; each cube is one
instruction *variant*: the propositions it needs true and false, in their own
words. A proposition's words are its `instruct "…"` line (what a reply does
when the answer is yes), else its grader question with the answer it must get;
a `matches` proposition is told as its pattern. Synth gives sample k of a class
variant k mod the number of variants, so every way into a class is asked for.

Computed from the compiled policy's decision diagrams (no source needed), on
the authoring side: the prime cover needs `dd` (compiler/proofs.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..policy import CompiledPolicy
from .proofs import Space, diagram_order

HEAD = "Write the next assistant message of the conversation, meeting every point below."
TAIL = "Write only the message itself: say nothing about these instructions."
# A formula whose prime cover is larger than this is asked for by its first variants only.
MAX_VARIANTS = 16

UNSATISFIABLE = "E0430"
NO_GRADED = "W0431"


@dataclass(frozen=True)
class ClassInstruction:
    """The instructions for one class of one response type.

    variants: one text per prime implicant of the class (empty: the class
        can never hold, and nothing can be asked for).
    graded: the variants name at least one graded proposition (else the
        grader checks nothing of what was asked: only patterns, or nothing).
    """

    response_type: str
    name: str
    variants: tuple[str, ...]
    graded: bool
    patterns: bool = False  # some variant names a `matches` proposition
    cubes: tuple = ()  # each variant's literals, {proposition: the value it must have}

    @property
    def problem(self) -> Optional[tuple[str, str, str]]:
        """(code, message, help) when the class cannot be asked for well; None when it can."""
        where = f"class `{self.name}` of response `{self.response_type}`"
        if not self.variants:
            return (UNSATISFIABLE, f"{where} can never hold: no completion can be generated for it",
                    "fix its formula (`rbrc check` finds contradictions); synth skips it")
        if not self.graded:
            return (NO_GRADED, f"{where} needs no graded proposition: its instruction "
                    + ("only names patterns" if self.patterns else "asks for nothing"),
                    "synth generates it with this instruction; give the class a graded proposition "
                    "for the grader to confirm")
        return None


def _phrase(policy: CompiledPolicy, name: str, value: bool) -> tuple[str, str]:
    """(list, line): which list a literal goes in and its words."""
    prop = policy.proposition(name)
    if not prop.graded:
        return ("do" if value else "dont"), f"contain text matching the pattern /{prop.pattern}/{prop.flags}"
    if prop.instruct:
        return ("do" if value else "dont"), prop.instruct
    return "ask", f"{prop.question} -> {'yes' if value else 'no'}"


def variant_text(policy: CompiledPolicy, cube: dict) -> str:
    """One cube ({proposition: required value}) as instruction text."""
    lists: dict[str, list[str]] = {"do": [], "dont": [], "ask": []}
    for name in policy.proposition_names:  # the policy's order, so the text is stable
        if name in cube:
            where, line = _phrase(policy, name, cube[name])
            lists[where].append(f"- {line}")
    parts = [HEAD]
    if lists["do"]:
        parts.append("Do:\n" + "\n".join(lists["do"]))
    if lists["dont"]:
        parts.append("Do not:\n" + "\n".join(lists["dont"]))
    if lists["ask"]:
        parts.append("A reviewer will ask these questions about your message; write it so that each answer "
                     "is the one shown:\n" + "\n".join(lists["ask"]))
    parts.append(TAIL)
    return "\n\n".join(parts)


def class_instructions(policy: CompiledPolicy) -> dict[tuple[str, str], ClassInstruction]:
    """{(response type, class): ClassInstruction} for every class, in the policy's order."""
    order = diagram_order(policy.proposition_names,
                          (dd for rt in policy.response_types.values() for dd in rt.diagrams))
    space = Space(policy.proposition_names, order)
    graded = {p.name for p in policy.propositions if p.graded}
    matched = set(policy.proposition_names) - graded
    out = {}
    for rt in policy.response_types.values():
        for name, dd in zip(rt.classes, rt.diagrams):
            cubes = space.prime_cover(space.from_diagram(dd))[:MAX_VARIANTS]
            out[(rt.name, name)] = ClassInstruction(
                rt.name, name, tuple(variant_text(policy, c) for c in cubes),
                any(n in graded for c in cubes for n in c), any(n in matched for c in cubes for n in c),
                tuple(cubes))
    return out


def explain_instructions(policy: CompiledPolicy, tokenizer=None) -> str:
    """`rbrc explain --synth`: every class's instruction variants with their sizes."""
    unit = "tokens" if tokenizer is not None else "characters"

    def size(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text)

    out = [f"policy {policy.name}: generation instructions per class ({unit}; sample k of a class gets "
           "variant k mod its variants)"]
    for (rt, name), ins in class_instructions(policy).items():
        out.append("")
        head = f"response {rt}, class {name}: "
        if not ins.variants:
            out.append(head + "no variant")
        for k, text in enumerate(ins.variants, 1):
            out.append(head + f"variant {k} of {len(ins.variants)} ({size(text)} {unit})")
            out.extend(("  | " + line).rstrip() for line in text.split("\n"))
        if ins.problem:
            code, message, help_ = ins.problem
            out.append(f"  {'error' if code.startswith('E') else 'warning'}[{code}]: {message}; {help_}")
    return "\n".join(out) + "\n"
