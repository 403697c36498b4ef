"""The automatic rater: both orders averaged (a position bias cancels), verdicts from
the verdict words' probabilities or parsed from text, scores on the 7-point scale."""

import numpy as np
import pytest

from model_service import judge
from model_service.registry import load_model

QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def tiny_judge():
    return judge.Judge(load_model("tiny-random"), max_length=256)


def test_a_real_model_always_answers_and_both_orders_agree(tiny_judge):
    verdict = tiny_judge.compare(QUESTION, "Blue.", "I like trains.")
    swapped = tiny_judge.compare(QUESTION, "I like trains.", "Blue.")

    assert verdict.first + verdict.second + verdict.tie == pytest.approx(1.0)
    assert (swapped.first, swapped.second) == pytest.approx(
        (verdict.second, verdict.first)
    )
    assert swapped.score == -verdict.score
    probabilities = tiny_judge.probabilities(
        tiny_judge.prompt_ids(QUESTION, "Blue.", "No.")
    )
    assert probabilities.sum() == pytest.approx(1.0) and (probabilities > 0).all()


class AlwaysFirst(judge.Judge):
    """A judge that always says "A": a pure position bias."""

    def __init__(self) -> None:
        pass

    def prompt_ids(self, turns, answer_a, answer_b, category=""):
        return [answer_a, answer_b]

    def probabilities(self, prompt_ids):
        return np.asarray([1.0, 0.0, 0.0])


def test_a_position_bias_cancels_out_into_a_tie():
    verdict = AlwaysFirst().compare(QUESTION, "x", "y")
    assert (verdict.first, verdict.second, verdict.score) == (0.5, 0.5, 0)


def test_verdicts_parsed_from_text():
    np.testing.assert_array_equal(judge.parse_verdict(" a, clearly"), [1, 0, 0])
    np.testing.assert_array_equal(judge.parse_verdict("**B**"), [0, 1, 0])
    np.testing.assert_array_equal(judge.parse_verdict("Tie."), [0, 0, 1])
    np.testing.assert_array_equal(judge.parse_verdict("Both are fine"), [0, 0, 1])


def test_scores_and_rubrics():
    assert judge.score_of(0.9, 0.05, 0.05) == 3
    assert judge.score_of(0.4, 0.25, 0.35) == 1
    assert judge.score_of(0.1, 0.5, 0.4) == -2
    assert judge.score_of(0.3, 0.3, 0.4) == 0
    assert "constraint" in judge.rubric_for("instruction_following")
    assert "unsafe" in judge.rubric_for("self_harm")
    assert judge.win_rate(
        [judge.Verdict(1, 0, 0, 2, 1), judge.Verdict(0, 0, 1, 0, 1)]
    ) == pytest.approx(0.75)
