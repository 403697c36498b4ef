"""The rater queue's rules, through its service functions (`webapp.ratings.queue`)."""

import datetime
import random

import pytest
from django.utils import timezone

from tests.conftest import make_user
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER
from webapp.ratings import queue
from webapp.ratings.models import Assignment, Campaign, Item, Rating

pytestmark = pytest.mark.django_db


def rater(name: str = "alice"):
    return queue.rater_for(make_user(name, RATER))


def rate(who, choice: int = 2, **verdict):
    task = queue.next_task(who)
    assert task is not None
    return queue.submit(who, task.token, queue.Verdict(choice=choice, **verdict))


def test_a_rater_gets_each_item_once_and_an_item_gets_k_ratings():
    campaign = make_campaign(prompts=3, ratings_per_item=2)
    alice, bob, carol = rater("alice"), rater("bob"), rater("carol")

    for who in (alice, bob):
        for _ in range(3):
            rate(who)
        assert queue.next_task(who) is None  # seen every item

    assert queue.next_task(carol) is None  # every item has its 2 ratings
    counts = sorted(Rating.objects.values_list("item", flat=True))
    assert len(counts) == 6 and len(set(counts)) == 3
    assert all(i.taken == i.rated == 2 for i in Item.objects.filter(campaign=campaign))


def test_the_same_task_comes_back_until_it_is_answered():
    make_campaign(prompts=3)
    alice = rater()
    first = queue.next_task(alice)
    assert queue.next_task(alice).pk == first.pk


def test_scores_are_stored_from_answer_as_side_whatever_side_it_was_shown_on():
    make_campaign(prompts=2, ratings_per_item=1)
    alice = rater()
    for _ in range(2):
        task = queue.next_task(alice)
        rating = queue.submit(
            alice, task.token, queue.Verdict(choice=1, unsafe_right=True)
        )
        # 1 = left much better: +3 for A if A was on the left, -3 if it was right.
        assert rating.score == (3 if task.left == "a" else -3)
        assert rating.left == task.left
        assert (rating.unsafe_a, rating.unsafe_b) == (
            (False, True) if task.left == "a" else (True, False)
        )


def test_sides_are_balanced_per_rater():
    make_campaign(prompts=10, ratings_per_item=1)
    alice = rater()
    lefts = []
    for _ in range(10):
        task = queue.next_task(alice, random.Random(0))
        lefts.append(task.left)
        queue.submit(alice, task.token, queue.Verdict(choice=4))
    assert lefts.count("a") == lefts.count("b") == 5


def test_a_rating_sent_twice_is_stored_once():
    make_campaign()
    alice = rater()
    task = queue.next_task(alice)
    first = queue.submit(alice, task.token, queue.Verdict(choice=2))
    again = queue.submit(alice, task.token, queue.Verdict(choice=7))
    assert again.pk == first.pk and again.score == first.score
    assert Rating.objects.count() == 1


def test_a_rating_for_someone_elses_task_is_refused_and_changes_nothing():
    make_campaign()
    alice, mallory = rater("alice"), rater("mallory")
    task = queue.next_task(alice)
    with pytest.raises(queue.TaskError, match="not yours"):
        queue.submit(mallory, task.token, queue.Verdict(choice=1))
    assert not Rating.objects.exists()
    assert Assignment.objects.get(pk=task.pk).status == Assignment.Status.LEASED


def test_an_expired_lease_goes_back_to_the_queue_and_its_rating_is_refused():
    make_campaign(prompts=1, ratings_per_item=1)
    alice, bob = rater("alice"), rater("bob")
    task = queue.next_task(alice)
    assert queue.next_task(bob) is None  # the only place is leased
    Assignment.objects.filter(pk=task.pk).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    assert queue.next_task(bob) is not None  # the place came back
    with pytest.raises(queue.TaskError, match="ran out"):
        queue.submit(alice, task.token, queue.Verdict(choice=1))
    assert not Rating.objects.exists()
    assert Item.objects.get().taken == 1  # bob's lease only


def test_a_skip_gives_the_item_to_others_but_never_back_to_the_rater():
    make_campaign(prompts=1, ratings_per_item=1)
    alice, bob = rater("alice"), rater("bob")
    task = queue.next_task(alice)
    queue.skip(alice, task.token, "cannot_judge")

    assert queue.next_task(alice) is None
    assert queue.next_task(bob) is not None
    skipped = Assignment.objects.get(pk=task.pk)
    assert (skipped.status, skipped.skip_reason) == ("skipped", "cannot_judge")
    with pytest.raises(queue.TaskError, match="skip reasons"):
        queue.skip(bob, queue.next_task(bob).token, "bored")


def test_a_closed_campaign_and_one_not_open_to_the_rater_give_nothing():
    closed = make_campaign("closed", status=Campaign.Status.CLOSED)
    private = make_campaign("private")
    private.raters.set([make_user("bob", RATER)])
    assert queue.next_task(rater("alice")) is None
    assert closed.items.filter(taken__gt=0).count() == 0


def test_the_daily_cap_stops_a_rater():
    make_campaign(prompts=5, ratings_per_item=1, daily_cap=2)
    alice = rater()
    rate(alice)
    rate(alice)
    assert queue.next_task(alice) is None


def test_gold_items_and_swapped_repeats_are_mixed_in_unannounced():
    make_campaign(prompts=20, ratings_per_item=1, gold_rate=0.3, repeat_rate=0.3)
    alice = rater()
    seen = []
    rng = random.Random(3)
    while (task := queue.next_task(alice, rng)) is not None:
        seen.append(task)
        queue.submit(alice, task.token, queue.Verdict(choice=3))

    ratings = Rating.objects.filter(rater=alice)
    assert ratings.filter(gold=True).exists()
    repeats = ratings.filter(repeat=True)
    assert repeats.exists()
    for repeat in repeats:
        original = repeat.assignment.repeat_of
        assert original.item_id == repeat.item_id and original.left != repeat.left
    # Repeats take no place: every normal item holds exactly its one rating.
    normal = Item.objects.filter(gold="")
    assert all(i.taken == i.rated == 1 for i in normal)
