"""Adaptive overlap: an item starts needing K min ratings and gets one more place,
up to K max, only while its raters disagree or its category's interval is too wide;
the dashboard shows the ratings it saved."""

import itertools

import pytest
from django.urls import reverse

from tests.conftest import make_user
from tests.ratings.factories import make_campaign, make_prompt_set
from webapp.accounts.roles import RATER
from webapp.evals import overlap
from webapp.ratings import queue
from webapp.ratings.models import Campaign, Item

pytestmark = pytest.mark.django_db

names = itertools.count()


def adaptive_campaign(prompts: int = 1, target_ci_width: float = 1.0, k_max: int = 3):
    """K min 2; a target of 1.0 (100 points) is always met."""
    return make_campaign(
        prompts=prompts,
        ratings_per_item=2,
        adaptive=True,
        k_min=2,
        k_max=k_max,
        target_ci_width=target_ci_width,
    )


@pytest.fixture
def rate(django_capture_on_commit_callbacks):
    def rate(*scores: int) -> None:
        """A new rater takes a task for each score (from the model under test's
        side, whichever side it is shown on) and submits it; what follows each
        commit runs as it would."""
        rater = queue.rater_for(make_user(f"rater-{next(names)}", RATER))
        for score in scores:
            task = queue.next_task(rater)
            choice = queue.choice_for(score, task.left)
            with django_capture_on_commit_callbacks(execute=True):
                queue.submit(rater, task.token, queue.Verdict(choice=choice))

    return rate


def needed(campaign) -> list[int]:
    return list(campaign.items.order_by("pk").values_list("needed", flat=True))


def test_an_item_whose_raters_disagree_gets_another_place(rate):
    campaign = adaptive_campaign(prompts=2)

    rate(2, 3)
    rate(-2, 1)

    assert needed(campaign) == [3, 2]


def test_an_item_whose_raters_agree_gets_none(rate):
    campaign = adaptive_campaign(prompts=2)

    rate(2, 3)
    rate(3, 1)

    assert needed(campaign) == [2, 2]
    assert queue.next_task(queue.rater_for(make_user("late", RATER))) is None


def test_a_wide_interval_asks_for_more_but_never_beyond_k_max(rate):
    # Within each item the raters agree, but the category's two prompts go
    # opposite ways: its interval spans 0-100%, wider than the target.
    campaign = adaptive_campaign(prompts=2, target_ci_width=0.5, k_max=3)

    rate(2, -2)
    rate(2, -2)
    assert needed(campaign) == [3, 3]

    rate(2, -2)
    assert needed(campaign) == [3, 3]
    assert not any(
        overlap.after_rating(pk) for pk in campaign.items.values_list("pk", flat=True)
    )


def test_two_decisions_on_the_same_ratings_add_one_place(rate):
    campaign = adaptive_campaign(k_max=5)
    rate(2)
    rate(-2)
    assert needed(campaign) == [3]

    # Two raters' hooks that both saw the same two ratings: one place, not two.
    item = campaign.items.get()
    Item.objects.filter(pk=item.pk).update(needed=2)
    decisions = [overlap.after_rating(item.pk), overlap.after_rating(item.pk)]

    assert decisions == [True, False]
    assert needed(campaign) == [3]


def test_a_campaign_without_the_option_never_grows(rate):
    campaign = make_campaign(prompts=1, ratings_per_item=2)

    rate(2)
    rate(-2)

    assert needed(campaign) == [2]


def test_the_dashboard_shows_the_ratings_saved(rate, researcher_client):
    campaign = adaptive_campaign(prompts=2, k_max=5)
    rate(2, 2)
    rate(3, 3)

    body = researcher_client.get(reverse("evals:campaign-json", args=[campaign.pk]))
    page = researcher_client.get(reverse("evals:campaign", args=[campaign.pk]))

    assert body.json()["adaptive_overlap"] == {
        "n_items": 2,
        "n_ratings": 4,
        "fixed_ratings": 10,
        "saved": 6,
        "saved_share": 0.6,
    }
    assert b"6 saved" in page.content


CAMPAIGN_FORM = {
    "name": "adaptive",
    "temperature": 0.7,
    "top_p": 0.95,
    "max_new_tokens": 16,
    "seed": 0,
    "gold_rate": 0,
    "repeat_rate": 0,
    "daily_cap": 50,
    "lease_seconds": 300,
    "ratings_per_item": 5,
    "adaptive": "on",
}


def test_the_form_refuses_k_min_above_k_max(researcher_client):
    prompt_set = make_prompt_set("adaptive-set")
    response = researcher_client.post(
        reverse("ratings:campaign-create"),
        {**CAMPAIGN_FORM, "prompt_set": prompt_set.pk, "k_min": 4, "k_max": 3},
    )

    assert response.status_code == 400
    assert "K max must be at least K min." in response.context["form"].errors["k_max"]
    assert not Campaign.objects.exists()


@pytest.mark.slow
def test_the_new_campaign_form_makes_an_adaptive_campaign(
    researcher_client, generation_worker, full_worker
):
    prompt_set = make_prompt_set("adaptive-set")
    response = researcher_client.post(
        reverse("ratings:campaign-create"),
        {
            **CAMPAIGN_FORM,
            "prompt_set": prompt_set.pk,
            "model": "tiny-random",
            "baseline": full_worker,
            "k_min": 2,
            "k_max": 4,
            "target_ci_width": 0.2,
        },
    )

    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert (campaign.adaptive, campaign.k_min, campaign.k_max) == (True, 2, 4)
    assert (campaign.target_ci_width, campaign.ratings_per_item) == (0.2, 2)
