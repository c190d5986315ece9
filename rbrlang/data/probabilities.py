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
first and exact token ids only for the items the bound cannot clear
(`require_context` raises `PromptTooLong` naming them; readers of files
locate that at their lines before they grade anything).
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .. import diagnostics as dg
from ..errors import GraderError, PolicyError
from ..policy import CompiledPolicy
from .jsonl import key_span
from .records import PromptTooLong

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
        # The grader's warnings (one per call) wait for the bar to close: one line each, not
        # a bar cut in two around every chunk's warning, nor one warning per chunk.
        with _held_warnings(bar is not None or todo.size > step):
            try:
                for start in range(0, todo.size, step):
                    rows = todo[start:start + step]
                    p, m = _grade(policy, grader, [conversations[i] for i in rows],
                                  [completions[i] for i in rows], detailed)
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


@contextlib.contextmanager
def _held_warnings(hold: bool):
    """Warnings given inside, shown when it ends (after the progress bar has
    closed), once each: the answer-mass warnings of every grader call merged
    into one over the whole run (`LowAnswerMass.merge`), others once per
    message, each at the place it was given. Held only where a run has a bar
    or several calls: the state `catch_warnings` swaps is the process's, and a
    trainer's single call (on a server's grader thread) has nothing to hold."""
    if not hold:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the filters apply when they are shown again, below
        yield
    shown: dict = {}
    for w in caught:
        key = (w.category, "low mass" if hasattr(w.message, "merge") else str(w.message))
        if key in shown and hasattr(w.message, "merge"):
            first = shown[key]
            shown[key] = dataclasses.replace(first, message=first.message.merge(w.message))
        else:
            shown.setdefault(key, _Held(w.message, w.category, w.filename, w.lineno))
    for w in shown.values():
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@dataclass(frozen=True)
class _Held:
    message: Any
    category: type
    filename: str
    lineno: int


def _bar(total: int, desc: str, progress: Optional[bool]):
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc=desc, disable=None if progress is None else not progress)


# --- prompts the grader's context cannot hold -----------------------------------------------

TOO_LONG = "E0311"


@dataclass(frozen=True)
class TooLong:
    """One item whose longest grader prompt is over the grader's context."""

    proposition: str  # the proposition whose prompt is longest
    tokens: int  # that prompt's length, with the whole conversation
    limit: int  # the grader's context, in tokens
    alone: int  # the longest prompt with no conversation: the completion alone

    @property
    def message(self) -> str:
        return (f"the grader prompt of `{self.proposition}` has {self.tokens} tokens, more than the grader's "
                f"context of {self.limit}")

    @property
    def help(self) -> str:
        if self.alone > self.limit:  # dropping turns cannot help: say so, not "truncate"
            return (f"even the completion alone makes a prompt of {self.alone} tokens: use a grader with a longer "
                    "context, or a shorter completion")
        return "drop the conversation's oldest turns to fit it (`truncate=\"oldest_turns\"`)"

    @property
    def params(self) -> tuple[str, ...]:
        """The argument the help names (`errors.RbrError.params`)."""
        return () if self.alone > self.limit else ("truncate",)

    @property
    def key(self) -> str:
        """The field at fault on a data line."""
        return "completion" if self.alone > self.limit else "prompt"

    def diagnostic(self, file: str, line: int, text: str) -> dg.Diagnostic:
        return dg.error(TOO_LONG, key_span(file, line, text, self.key), self.message, self.help,
                        params=self.params)


def too_long(policy: CompiledPolicy, grader: Any, conversations: Sequence, completions: Sequence[str]) -> dict:
    """`{item index: TooLong}` for the items whose prompts the grader cannot
    take, truncation included; empty when the grader states no context length.

    Cheap first: the tokenizers graders use give no more tokens than the text
    has UTF-8 bytes (byte-level BPE, SentencePiece with byte fallback and
    WordPiece spend at least one byte per token; a chat template's special
    tokens are many bytes each), so an item whose rendered prompts, in bytes
    plus the chat template's own text, are within the context fits without
    being tokenized. Only the others are encoded exactly, as the grader will
    encode them. (A tokenizer whose normalisation lengthens text could beat the
    bound; the grader then refuses that prompt while grading, as it always has.)"""
    encoder = getattr(grader, "encoder", None)
    limit = getattr(encoder, "max_length", None)
    names = [p.name for p in policy.propositions if p.graded]
    if limit is None or not names:
        return {}
    # The chat template's text around a prompt, a BOS, and a token of slack for a tokenizer's
    # leading-space marker (SentencePiece's "▁").
    overhead = len(encoder.text("", policy).encode("utf-8")) + 2
    out = {}
    for i, (conversation, completion) in enumerate(zip(conversations, completions)):
        if max(len(policy.render(n, conversation, completion).encode("utf-8")) for n in names) + overhead <= limit:
            continue
        try:
            encoder.encode_items(policy, [conversation], [completion], [i])
        except GraderError:
            out[i] = _measure(policy, encoder, names, conversation, completion, limit)
    return out


def require_context(policy: CompiledPolicy, grader: Any, conversations: Sequence, completions: Sequence[str],
                    rows: Optional[Sequence[int]] = None) -> None:
    """`PromptTooLong` naming every item (of `rows`, default all) whose prompt
    the grader's context cannot hold (`too_long`)."""
    rows = range(len(completions)) if rows is None else [int(i) for i in rows]
    problems = too_long(policy, grader, [conversations[i] for i in rows], [completions[i] for i in rows])
    if problems:
        raise PromptTooLong({rows[k]: v for k, v in problems.items()})


def _measure(policy, encoder, names, conversation, completion, limit: int) -> TooLong:
    """The numbers for the message: the longest prompt with and without the conversation."""
    def lengths(conv):
        ids = encoder.ids([encoder.text(policy.render(n, conv, completion), policy) for n in names])
        return {n: len(x) for n, x in zip(names, ids)}

    full, alone = lengths(list(conversation)), lengths([])
    longest = max(full, key=full.get)
    return TooLong(longest, full[longest], int(limit), max(alone.values()))
