"""`rbrlang.data.probabilities`: the one path from records to a checked [N, P]
P(yes), with a real tiny grader and a real compiled policy."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rbrlang.data.probabilities import Given, probabilities
from rbrlang.errors import GraderError, PolicyError
from rbrlang.policy.calibration import Calibration, PlattMap, platt


pytestmark = pytest.mark.filterwarnings("ignore::rbrlang.runtime.GraderWarning")

CONVERSATIONS = [[{"role": "user", "content": f"Question {i}?"}] for i in range(5)]
COMPLETIONS = ["Yes.", "No.", "I can't help with that.", "Sure, here it is.", ""]


def test_chunks_and_one_call_give_the_grader_s_answers(minimal, grader):
    want = grader.grade_detailed(minimal, CONVERSATIONS, COMPLETIONS)
    one = probabilities(minimal, grader, CONVERSATIONS, COMPLETIONS, chunk=None, detailed=True)
    chunked = probabilities(minimal, grader, CONVERSATIONS, COMPLETIONS, chunk=2, progress=True)
    assert one.p_yes.dtype == np.float64 and one.p_yes.shape == (5, 2) and one.graded == chunked.graded == 5
    np.testing.assert_array_equal(one.p_yes, want.p_yes.double().numpy())
    np.testing.assert_array_equal(one.answer_mass, want.answer_mass.double().numpy())
    np.testing.assert_allclose(chunked.p_yes, one.p_yes, atol=1e-6)  # other batches, other kernels
    assert chunked.answer_mass is None


def test_the_grader_s_warnings_come_once_after_the_progress_bar(minimal, grader, capsys):
    """Every grader call warns about its answer mass (the tiny grader's random weights
    put little on yes/no): shown as one warning for the whole run, after the bar has
    closed, not one per chunk, each cutting the bar in two and printing it again."""
    import warnings

    from rbrlang.cli.output import plain_warnings

    with warnings.catch_warnings(), plain_warnings("grade"):
        warnings.simplefilter("always")
        probabilities(minimal, grader, CONVERSATIONS, COMPLETIONS, chunk=2, progress=True)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1, err
    bar, warning = err.rstrip("\n").rsplit("\n", 1)
    assert warning.startswith("rbrc grade: warning: the grader put less than 50% of its next-token probability on "
                              "yes/no answers for 10 of 10 gradings"), err  # 3 calls, merged
    assert "5/5" in bar.split("\r")[-1] and bar.count("0/5") == 1, err  # the bar drawn once, to its end
    with warnings.catch_warnings(record=True) as caught:  # a library caller: one warning too, at its call
        warnings.simplefilter("always")
        probabilities(minimal, grader, CONVERSATIONS, COMPLETIONS, chunk=2)
    assert len(caught) == 1 and str(caught[0].message).split(" (lowest")[0].endswith("for 10 of 10 gradings")


def test_given_rows_stay_and_only_a_grader_s_numbers_are_calibrated(minimal, grader):
    cal = Calibration(minimal.name, {"a": PlattMap("a", "", coef=2.0, intercept=0.5)})
    values = np.full((3, 2), np.nan)
    values[0] = [1.0, 0.0]  # human booleans
    values[1] = [0.3, 0.6]  # a grader's numbers, given on the line
    soft = np.array([[False, False], [True, True], [False, False]])
    given = Given(values, soft, np.array([False, False, True]))  # row 2: graded here
    raw = probabilities(minimal, grader, CONVERSATIONS[:3], COMPLETIONS[:3], given=given, calibration=None)
    assert raw.graded == 1
    graded = grader.grade(minimal, CONVERSATIONS[2:3], COMPLETIONS[2:3]).double().numpy()[0]
    np.testing.assert_array_equal(raw.p_yes[:2], values[:2])
    np.testing.assert_array_equal(raw.p_yes[2], graded)

    def mapped(p):
        return float(platt(np.log(p / (1 - p)), 2.0, 0.5))

    # The policy's calibration (the default), on the cells a grader's numbers fill, in column `a` only.
    out = probabilities(dataclasses.replace(minimal, calibration=cal), grader, CONVERSATIONS[:3], COMPLETIONS[:3],
                        given=given).p_yes
    assert out[0].tolist() == [1.0, 0.0]
    assert out[1].tolist() == pytest.approx([mapped(0.3), 0.6], abs=1e-12)
    assert out[2].tolist() == pytest.approx([mapped(graded[0]), graded[1]], abs=1e-12)
    # a calibration given (eval's, fitted now) wins over the policy's
    np.testing.assert_allclose(probabilities(minimal, grader, CONVERSATIONS[:3], COMPLETIONS[:3], given=given,
                                             calibration=cal).p_yes, out, atol=1e-12)


class Garbled:
    """A real grader whose answers are damaged on the way (a foreign backend's bug)."""

    def __init__(self, grader, damage):
        self.grader, self.damage = grader, damage

    def grade(self, policy, conversations, responses):
        return self.damage(self.grader.grade(policy, conversations, responses))


@pytest.mark.parametrize("damage, says", [
    (lambda p: p[:, :1], r"returned shape \[5, 1\], expected \[5, 2\]"),
    (lambda p: p.T, r"returned shape \[2, 5\], expected \[5, 2\]"),
    (lambda p: torch.where(p > 0, torch.nan, p), "not probabilities in"),
    (lambda p: p * 4, "not probabilities in"),
], ids=("a-column-short", "transposed", "nan", "out-of-range"))
def test_what_the_grader_gives_is_checked(minimal, grader, damage, says):
    with pytest.raises(GraderError, match=says):
        probabilities(minimal, Garbled(grader, damage), CONVERSATIONS, COMPLETIONS)


def test_given_values_and_a_missing_grader_are_clear_errors(minimal):
    values = np.array([[0.5, 1.5]])
    given = Given(values, np.ones((1, 2), dtype=bool), np.array([False]))
    with pytest.raises(PolicyError, match=r"finite probabilities in \[0, 1\]; \[0, 1\] is 1.5 .*proposition `b`"):
        probabilities(minimal, None, CONVERSATIONS[:1], COMPLETIONS[:1], given=given)
    with pytest.raises(PolicyError, match="give a grader"):
        probabilities(minimal, None, CONVERSATIONS[:1], COMPLETIONS[:1])
