"""Records to P(yes): the one path from (conversation, completion) items to a
checked `[N, P]` array, for `rbrc grade`, fit, eval and `RBRReward` (and synth).

`probabilities` holds what every caller did on its own before: chunking the
grader calls (the progress bar moves, memory stays flat), the progress bar,
the check of what the grader gave (shape, finite, in [0, 1]), P(yes) a line
already gives (used as they are; the grader fills the rest) and the
calibration, applied here and nowhere else: to every P(yes) a grader gave and
to numbers a line gave as a grader's, never to human booleans.

It lives in `data/`, not `runtime/`: its inputs are records, and every stage
that needs it may import `data` (the dependency rule: rewards → policy +
runtime + data; fit, evaluate → policy + data), while `data` imports no
runtime. A grader is whatever has `grade(policy, conversations, responses) ->
[n, P]` (and `grade_detailed` for the answer mass), so every backend fits.

`too_long` is the check that can be made before any forward pass: which
items' prompts the grader's context cannot hold, from a cheap length bound
first and exact token ids only for the items the bound cannot clear.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..errors import GraderError, PolicyError
from ..policy import CompiledPolicy

if TYPE_CHECKING:
    import numpy as np

# NumPy is imported where it is used: `rbrc grade` imports this module before it
# checks that the grader's extras (numpy among them) are installed.

CHUNK = 64  # items per grader call where the caller grades a file (not a trainer's batch)
POLICY = "policy"  # `calibration=POLICY`: the compiled folder's calibration.json, when it has one


@dataclass(frozen=True, eq=False)
class Given:
    """P(yes) the lines gave themselves.

    values: `[N, P]` P(yes) (booleans as 0/1), NaN where a line gives none.
    soft: `[N, P]` bool: numbers to calibrate as a grader's (a grader's P(yes)
        given on the line); False for human booleans.
    to_grade: `[N]` bool: rows the grader grades (its graded columns replace
        `values` there); the other rows are used as they are."""

    values: np.ndarray
    soft: np.ndarray
    to_grade: np.ndarray


@dataclass(frozen=True, eq=False)
class Probabilities:
    p_yes: np.ndarray  # [N, P] float64, calibrated where asked
    answer_mass: Optional[np.ndarray]  # [N, P] (`detailed=True`): 1 where no grader answered
    graded: int  # rows the grader graded


def probabilities(policy: CompiledPolicy, grader: Any, conversations: Sequence, completions: Sequence[str], *,
                  given: Optional[Given] = None, calibration: Any = POLICY, chunk: Optional[int] = CHUNK,
                  progress: Optional[bool] = False, desc: str = "grading",
                  detailed: bool = False) -> Probabilities:
    """`[N, P]` P(yes) of N items, in the policy's proposition order.

    grader: anything with `grade(policy, conversations, responses) -> [n, P]`
        (`grade_detailed` when `detailed`); may be None when nothing is to grade.
    given: P(yes) the lines gave (`Given`); None: every row is graded.
    calibration: POLICY (the policy's calibration.json, if any), None (raw
        P(yes), e.g. to fit a calibration on), or a `Calibration` (one fitted now).
    chunk: items per grader call; None: all in one call (a trainer's batch,
        which the grader batches itself).
    progress: a tqdm bar; None shows it on a terminal only.

    Raises GraderError when the grader's answer is not `[n, P]` probabilities;
    PolicyError when a given value is no probability or rows are to grade
    without a grader (callers that can say more check that first)."""
    import numpy as np

    n, width = len(completions), len(policy.propositions)
    if len(conversations) != n:
        raise PolicyError(f"{len(conversations)} conversations but {n} completions")
    if given is None:
        p_yes = np.full((n, width), np.nan)
        soft = np.zeros((n, width), dtype=bool)
        todo = np.arange(n)
    else:
        p_yes = np.array(given.values, dtype=np.float64, copy=True)
        soft = np.array(given.soft, dtype=bool, copy=True)
        if p_yes.shape != (n, width) or soft.shape != (n, width) or np.shape(given.to_grade) != (n,):
            raise PolicyError(f"given P(yes) must be [{n}, {width}] (items × the policy's propositions), "
                              f"got {list(p_yes.shape)}")
        _check_given(policy, p_yes)
        todo = np.flatnonzero(given.to_grade)
    mass = np.ones((n, width)) if detailed else None
    if todo.size:
        if grader is None:
            raise PolicyError("some items have no P(yes) to use: give a grader to grade them")
        graded_cols = np.flatnonzero([p.graded for p in policy.propositions])
        step = int(todo.size) if chunk is None else max(1, int(chunk))
        bar = _bar(int(todo.size), desc, progress)
        try:
            for start in range(0, todo.size, step):
                rows = todo[start:start + step]
                p, m = _grade(policy, grader, [conversations[i] for i in rows], [completions[i] for i in rows],
                              detailed)
                # The whole row: a grader computes `matches` columns exactly, as a line's reader does.
                p_yes[rows] = p
                soft[np.ix_(rows, graded_cols)] = True
                if m is not None:
                    mass[rows] = m
                if bar is not None:
                    bar.update(rows.size)
        finally:
            if bar is not None:
                bar.close()
    if calibration is POLICY:
        calibration = policy.calibration
    if calibration is not None and soft.any():
        calibrated = calibration.apply(policy.proposition_names, np.nan_to_num(p_yes, nan=0.5))
        p_yes = np.where(soft, calibrated, p_yes)
    return Probabilities(p_yes, mass, int(todo.size))


def _grade(policy, grader, conversations: list, completions: list, detailed: bool):
    """One grader call, its answer checked: `([n, P] float64, [n, P] mass or None)`."""
    import numpy as np

    if detailed:
        grades = grader.grade_detailed(policy, conversations, completions)
        p, mass = _array(grades.p_yes), _array(grades.answer_mass)
    else:
        p, mass = _array(grader.grade(policy, conversations, completions)), None
    want = (len(completions), len(policy.propositions))
    if p.shape != want or (mass is not None and mass.shape != want):
        raise GraderError(f"the grader returned shape {list(p.shape)}, expected {list(want)} "
                          "(items × the policy's propositions)")
    if not np.isfinite(p).all() or ((p < 0) | (p > 1)).any():
        raise GraderError("the grader returned values that are not probabilities in [0, 1] (NaN, infinite or "
                          "out of range)")
    return p, mass


def _array(value) -> "np.ndarray":
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor, wherever it lives
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _check_given(policy: CompiledPolicy, values: "np.ndarray") -> None:
    """A given value is a probability; NaN means "not given"."""
    import numpy as np

    bad = ~np.isnan(values) & ~((values >= 0) & (values <= 1))
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise PolicyError(f"given P(yes) must be finite probabilities in [0, 1]; [{row}, {col}] is "
                          f"{values[row, col]:.6g} (column {col} is proposition `{policy.proposition_names[col]}`)")


def _bar(total: int, desc: str, progress: Optional[bool]):
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc=desc, disable=None if progress is None else not progress)
