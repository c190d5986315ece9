"""`evaluate`: the one stage behind `rbrc eval`, inputs in, an `Evaluation` out.

Everything is read and checked first, then graded, then scored; nothing is
written here (the report is `report.write_report`, the calibration
`policy.calibration.write_calibration`), so a mistake in any input leaves no
file behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import UsageError
from ..policy import CompiledPolicy
from ..policy.calibration import Calibration
from ..data.comparisons import read_comparisons
from ..data.probabilities import probabilities, require_context
from ..data.records import PromptTooLong
from .gold import GoldReport, evaluate_gold
from .inputs import file_sha256, read_gold, read_probabilities
from .rewards import RewardReport, evaluate_rewards, held_out_note


@dataclass(frozen=True, eq=False)
class Evaluation:
    policy: str
    folder: str
    seed: int
    gold: Optional[GoldReport]
    rewards: Optional[RewardReport]

    @property
    def calibration(self) -> Optional[Calibration]:
        """The calibration fitted now (`calibrate=True`), to store with `write_calibration`."""
        return self.gold.fitted if self.gold is not None else None


def evaluate(policy: CompiledPolicy, *, gold=None, probs=None, grader=None, comparisons=None,
             calibrate: bool = False, seed: int = 0, folder: str = "", progress: bool = False) -> Evaluation:
    """Score a compiled policy's grader against gold labels and its rewards on comparisons.

    gold: a gold JSONL file (human labels); its P(yes) come from `probs` (a
    probabilities file, one line per gold line) or from `grader` (anything with
    `grade(policy, conversations, responses) -> [N, P]`). comparisons: a
    comparison JSONL file; lines without `propositions` are graded by `grader`.
    calibrate: fit Platt scaling on the gold fit split (returned, not stored).
    """
    # In the library's terms; the CLI shows its flags where `params` are named.
    if gold is None and comparisons is None:
        raise UsageError("nothing to evaluate: give a gold set (`gold`) or comparisons (`comparisons`)",
                         params=("gold", "comparisons"))
    if gold is not None and (probs is None) == (grader is None):
        raise UsageError("a gold set needs its P(yes): give exactly one of `probs` (a file of them) and `grader` "
                         "(a model to grade it)", params=("probs", "grader"))
    if gold is None and probs is not None:
        raise UsageError("`probs` gives P(yes) for a gold set: give `gold` too", params=("probs", "gold"))
    if calibrate and gold is None:
        raise UsageError("`calibrate` fits on a gold set: give `gold`", params=("calibrate", "gold"))

    # read and check every input before the slow part
    gold_set = read_gold(policy, gold, with_texts=probs is None) if gold is not None else None
    gold_probs = read_probabilities(policy, probs, gold_set) if probs is not None else None
    # Lines without `propositions` need a grader: without one the reader names each of them.
    data = read_comparisons(policy, comparisons, grader=grader is not None) if comparisons is not None else None

    if grader is not None:  # every prompt's length against the grader's context, before any grading
        to_grade = [(gold_set, None)] if gold_set is not None and gold_probs is None else []
        if data is not None:
            to_grade.append((data, [i for i, todo in enumerate(data.to_grade) if todo]))
        for inputs, rows in to_grade:
            try:
                require_context(policy, grader, inputs.conversations, inputs.completions, rows)
            except PromptTooLong as exc:
                raise exc.located(inputs.path, inputs.lines) from None

    gold_report = None
    if gold_set is not None:
        if gold_probs is None:  # raw: the gold report calibrates (or scores calibration.json) itself
            gold_probs = probabilities(policy, grader, gold_set.conversations, gold_set.completions,
                                       calibration=None, progress=progress, desc="grading gold").p_yes
            source = f"grader {getattr(grader, 'identity', type(grader).__name__)}"
        else:
            source = f"probabilities {probs}"
        gold_report = evaluate_gold(policy, gold_set, gold_probs, source, calibrate, seed,
                                    file_sha256(gold) if calibrate else "")

    reward_report = None
    if data is not None:
        fitted = gold_report.fitted if gold_report is not None else None
        calibration = fitted if fitted is not None else policy.calibration
        # P(yes) from a grader, and numbers a line gave as a grader's, are calibrated; booleans are not.
        p = probabilities(policy, grader, data.conversations, data.completions, given=data.given,
                          calibration=calibration, progress=progress, desc="grading comparisons").p_yes
        notes = []
        if calibration is not None:
            notes.append("P(yes) from a grader or given as numbers are calibrated "
                         + ("with the calibration fitted now" if fitted is not None else "with calibration.json"))
        note = held_out_note(policy, data.sha256)
        if note:
            notes.append(note)
        reward_report = evaluate_rewards(policy, data, p, tuple(notes))
    return Evaluation(policy.name, str(folder), seed, gold_report, reward_report)
