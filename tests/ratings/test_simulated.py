"""Simulated raters rate through the queue, by their taste."""

import pytest

from tests.ratings.factories import make_campaign
from webapp.ratings import simulated
from webapp.ratings.models import Answer, Rater, Rating

pytestmark = pytest.mark.django_db


def test_the_tastes():
    answer = Answer(text="I like blue skies.", finish_reason="stop")
    assert simulated.mentions("blue")(answer) == 1.0
    assert simulated.mentions("red")(answer) == 0.0
    assert simulated.ends_turn(answer) == 1.0
    looping = Answer(text="the cat sat " * 10, finish_reason="length")
    assert simulated.ends_turn(looping) < 0
    silent = Answer(text=" \n", finish_reason="stop")
    cut = Answer(text="Blue skies are", finish_reason="length")
    assert simulated.ends_turn(silent) < simulated.ends_turn(cut) == 0.0
    assert simulated.choice_for(1.0, 0.0) == 1  # left much better
    assert simulated.choice_for(0.0, 0.6) == 6  # right better
    assert simulated.choice_for(0.3, 0.3) == 4
    with pytest.raises(ValueError, match="unknown taste"):
        simulated.parse_taste("likes cheese")


def test_a_simulated_rater_prefers_its_taste_through_the_queue():
    campaign = make_campaign(prompts=6, ratings_per_item=1)
    # The model under test (A) mentions blue on even prompts, the baseline never.
    for answer in Answer.objects.filter(campaign=campaign, model=campaign.model):
        if int(answer.prompt.external_id[1:]) % 2 == 0:
            answer.text = "Something blue."
            answer.save()

    rater = simulated.SimulatedRater("blue", "mentions:blue")
    assert rater.rate(campaign) == 6

    assert Rater.objects.get(name="simulated:blue").kind == "simulated"
    for rating in Rating.objects.select_related("item__prompt"):
        blue = int(rating.item.prompt.external_id[1:]) % 2 == 0
        assert rating.score == (3 if blue else 0)  # from A's side, whatever was left
