"""A model rates a campaign as a judge: its ratings under a judge rater, from A's
side, none twice, taking no place in the human queue."""

import pytest
from django.core.management import call_command

from tests.ratings.factories import make_campaign
from webapp.celery import app as celery_app
from webapp.ratings.models import Item, Rating

pytestmark = pytest.mark.django_db


def test_a_judge_rates_every_item_once_apart_from_people(capsys):
    campaign = make_campaign(prompts=3, ratings_per_item=2)

    call_command("judge_campaign", "--campaign", "campaign", "--judge", "tiny-random")
    call_command("judge_campaign", "--campaign", "campaign", "--judge", "tiny-random")

    ratings = Rating.objects.filter(rater__name="judge:tiny-random")
    assert ratings.count() == 3  # the second run found nothing new
    assert {r.rater.kind for r in ratings} == {"judge"}
    assert all(-3 <= r.score <= 3 and "confidence" in r.rationale for r in ratings)
    assert all(
        i.taken == 0 and i.rated == 0 for i in Item.objects.filter(campaign=campaign)
    )
    assert "judged 3 items" in capsys.readouterr().out


def test_the_judge_task_goes_to_the_training_queue():
    route = celery_app.amqp.router.route({}, "webapp.ratings.tasks.judge_campaign")
    assert route["queue"].name == "training"
