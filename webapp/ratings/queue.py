"""The blind rater queue: who gets which item next, leases, ratings and skips.

Guarantees, with any number of raters at once, on SQLite and PostgreSQL:

- an item is never handed out more than `needed` times: `Item.taken` counts live
  leases and ratings, and grows only by a conditional update (`taken < needed`),
  which the database applies atomically; a check constraint backs it up. On
  PostgreSQL the candidate row is taken `FOR UPDATE SKIP LOCKED`, so concurrent raters
  spread over items instead of queueing on one; SQLite serializes writers
  (`BEGIN IMMEDIATE`, see settings);
- a rater never gets an item twice (a unique constraint), but for one swapped repeat
  of an item they rated, which is never announced;
- a lease that expires gives its place back; a rating sent twice is stored once; a
  rating for a task that is not yours, or whose lease expired, is refused and
  changes nothing.

Gold items (a known better side) and swapped repeats are mixed in at each campaign's
rates. The side the model under test is shown on is random, balanced per rater.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import secrets

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from webapp.evals.live import rating_stored
from webapp.ratings.models import Assignment, Campaign, Item, Rater, Rating

# The 7-point scale as shown, 1 = left much better ... 7 = right much better.
CHOICES = {
    1: "Left much better",
    2: "Left better",
    3: "Left slightly better",
    4: "About the same",
    5: "Right slightly better",
    6: "Right better",
    7: "Right much better",
}
SKIP_REASONS = {
    "cannot_judge": "I cannot judge this topic",
    "broken": "An answer is broken or empty",
    "offensive": "The content is too offensive to read",
    "other": "Another reason",
}
# A repeat shows an item rated at least this many tasks ago, so it is not recognized.
REPEAT_AFTER_TASKS = 5
CANDIDATES = 8


class TaskError(Exception):
    """The rater's request cannot be honoured (the message says why); nothing
    changed."""


def rater_for(user) -> Rater:
    """The user's rater identity, made on first use."""
    rater, _ = Rater.objects.get_or_create(
        user=user, defaults={"name": f"user:{user.get_username()}"}
    )
    return rater


def score_for_a(choice: int, left: str) -> int:
    """The 7-point choice (1 = left much better) as a score from answer_a's side."""
    if choice not in CHOICES:
        raise TaskError("Choose one of the 7 points (1 to 7).")
    from_left = 4 - choice
    return from_left if left == "a" else -from_left


def choice_for(score_a: int, left: str) -> int:
    """The inverse of `score_for_a`."""
    return 4 - (score_a if left == "a" else -score_a)


# --- leases ---------------------------------------------------------------------------


def expire_leases(now: datetime.datetime | None = None) -> int:
    """Gives back the places of leases past their time; returns how many."""
    now = now or timezone.now()
    stale = list(
        Assignment.objects.filter(
            status=Assignment.Status.LEASED, expires_at__lt=now
        ).values_list("pk", "item_id", "repeat_of_id")[:500]
    )
    expired = 0
    for pk, item_id, repeat_of in stale:
        with transaction.atomic():
            if release(pk, item_id, repeat_of, Assignment.Status.EXPIRED):
                expired += 1
    return expired


def release(pk: int, item_id: int, repeat_of: int | None, status: str) -> bool:
    """Ends a live lease (expired or skipped) and gives its place back, once."""
    ended = Assignment.objects.filter(pk=pk, status=Assignment.Status.LEASED).update(
        status=status
    )
    if ended and repeat_of is None:
        Item.objects.filter(pk=item_id).update(taken=F("taken") - 1)
    return bool(ended)


# --- who gets what --------------------------------------------------------------------


def open_campaigns(
    rater: Rater, now: datetime.datetime, only: Campaign | None = None
) -> list[Campaign]:
    """The rater's open campaigns, under their daily cap today, oldest first."""
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rated_today = dict(
        Rating.objects.filter(rater=rater, created_at__gte=day_start)
        .values_list("item__campaign")
        .annotate(n=Count("pk"))
        .values_list("item__campaign", "n")
    )
    campaigns = (
        Campaign.objects.filter(status=Campaign.Status.OPEN)
        .filter(Q(raters__isnull=True) | Q(raters=rater.user_id))
        .distinct()
        .order_by("created_at", "id")
    )
    if only is not None:
        campaigns = campaigns.filter(pk=only.pk)
    return [c for c in campaigns if rated_today.get(c.pk, 0) < c.daily_cap]


def next_task(
    rater: Rater,
    rng: random.Random | None = None,
    campaign: Campaign | None = None,
) -> Assignment | None:
    """The rater's current task, or a new one (of `campaign` only, if given); None
    when nothing is left for them."""
    rng = rng or random.Random(secrets.randbits(64))
    now = timezone.now()
    expire_leases(now)
    current = (
        Assignment.objects.filter(
            rater=rater, status=Assignment.Status.LEASED, expires_at__gte=now
        )
        .select_related("item")
        .first()
    )
    if current is not None:
        return current
    for candidate in open_campaigns(rater, now, campaign):
        roll = rng.random()
        if roll < candidate.gold_rate:
            kinds = (take_gold, take_item)
        elif roll < candidate.gold_rate + candidate.repeat_rate:
            kinds = (take_repeat, take_item)
        else:
            kinds = (take_item,)
        for take in kinds:
            if (assignment := take(rater, candidate, now, rng)) is not None:
                return assignment
    return None


def _unseen(items: QuerySet, rater: Rater) -> QuerySet:
    seen = Assignment.objects.filter(item=OuterRef("pk"), rater=rater)
    return items.filter(taken__lt=F("needed")).exclude(Exists(seen))


def take_item(rater, campaign, now, rng) -> Assignment | None:
    """An item of the campaign that still needs ratings, closest to done first."""
    items = _unseen(Item.objects.filter(campaign=campaign, gold=""), rater)
    return _take(rater, campaign, items.order_by("-taken", "id"), now, rng)


def take_gold(rater, campaign, now, rng) -> Assignment | None:
    items = _unseen(Item.objects.filter(campaign=campaign).exclude(gold=""), rater)
    return _take(rater, campaign, items.order_by("?"), now, rng)


def _take(rater, campaign, items: QuerySet, now, rng) -> Assignment | None:
    """Leases the first of `items` whose place can be taken, in one transaction."""
    for _ in range(CANDIDATES):
        with transaction.atomic():
            candidates = items
            if connection.features.has_select_for_update_skip_locked:
                candidates = items.select_for_update(skip_locked=True, of=("self",))
            item = candidates.only("pk").first()
            if item is None:
                return None
            if not Item.objects.filter(pk=item.pk, taken__lt=F("needed")).update(
                taken=F("taken") + 1
            ):
                continue  # taken meanwhile (SQLite would not get here)
            try:
                with transaction.atomic():
                    return Assignment.objects.create(
                        item_id=item.pk,
                        rater=rater,
                        left=balanced_left(rater, rng),
                        expires_at=now
                        + datetime.timedelta(seconds=campaign.lease_seconds),
                    )
            except IntegrityError:  # the same rater took it in another request
                Item.objects.filter(pk=item.pk).update(taken=F("taken") - 1)
    return None


def take_repeat(rater, campaign, now, rng) -> Assignment | None:
    """An item the rater rated a while ago, sides swapped; it takes no place."""
    mine = Rating.objects.filter(
        rater=rater, item__campaign=campaign, repeat=False, gold=False
    )
    recent = list(
        mine.order_by("-created_at").values_list("pk", flat=True)[:REPEAT_AFTER_TASKS]
    )
    rating = (
        mine.exclude(pk__in=recent)
        .filter(assignment__isnull=False, repeated_by__isnull=True)
        .order_by("?")
        .first()
    )
    if rating is None:
        return None
    try:
        with transaction.atomic():
            return Assignment.objects.create(
                item_id=rating.item_id,
                rater=rater,
                left="b" if rating.left == "a" else "a",
                repeat_of=rating,
                expires_at=now + datetime.timedelta(seconds=campaign.lease_seconds),
            )
    except IntegrityError:  # repeated meanwhile
        return None


def balanced_left(rater: Rater, rng: random.Random) -> str:
    """The side answer A goes on: the one this rater has seen it on less, at random
    on a tie, so that every rater sees the model under test as often on each side."""
    counts = dict(
        Assignment.objects.filter(rater=rater)
        .values_list("left")
        .annotate(n=Count("pk"))
        .values_list("left", "n")
    )
    a, b = counts.get("a", 0), counts.get("b", 0)
    if a != b:
        return "a" if a < b else "b"
    return rng.choice("ab")


# --- answers from raters --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a rater sends for a task, as shown (left / right)."""

    choice: int  # 1..7, 1 = left much better
    both_bad: bool = False
    unsafe_left: bool = False
    unsafe_right: bool = False
    rationale: str = ""
    active_seconds: float | None = None


def _own_lease(rater: Rater, token) -> Assignment:
    """The rater's assignment by token, locked; a token that is not theirs (or not
    one at all) gets the same answer as one that does not exist."""
    assignment = (
        Assignment.objects.select_for_update()
        .select_related("item")
        .filter(token=token)
        .first()
    )
    if assignment is None or assignment.rater_id != rater.pk:
        raise TaskError("This task is not yours.")
    return assignment


def _check_live(assignment: Assignment) -> None:
    if assignment.status == Assignment.Status.LEASED:
        if assignment.expires_at >= timezone.now():
            return
        release(
            assignment.pk,
            assignment.item_id,
            assignment.repeat_of_id,
            Assignment.Status.EXPIRED,
        )
        assignment.status = Assignment.Status.EXPIRED
    if assignment.status == Assignment.Status.EXPIRED:
        raise TaskError(
            "Your time on this task ran out and it went back to the queue; "
            "nothing was saved. Take the next task."
        )
    raise TaskError("This task was skipped; nothing was saved.")


def submit(rater: Rater, token, verdict: Verdict) -> Rating:
    """Stores the rater's verdict on their task, once; a second send returns the
    rating stored the first time, unchanged."""
    if not isinstance(verdict.rationale, str) or len(verdict.rationale) > 5000:
        raise TaskError("The rationale must be text of at most 5000 characters.")
    seconds = verdict.active_seconds
    if seconds is not None and not (0 <= seconds < 86_400):
        raise TaskError("Active seconds must be between 0 and 86400.")
    with transaction.atomic():
        assignment = _own_lease(rater, token)
        if assignment.status == Assignment.Status.RATED:
            return assignment.rating
        _check_live(assignment)
        left = assignment.left
        unsafe = {
            left: verdict.unsafe_left,
            "b" if left == "a" else "a": verdict.unsafe_right,
        }
        rating = Rating.objects.create(
            item=assignment.item,
            rater=rater,
            assignment=assignment,
            score=score_for_a(verdict.choice, left),
            left=left,
            both_bad=bool(verdict.both_bad),
            unsafe_a=bool(unsafe["a"]),
            unsafe_b=bool(unsafe["b"]),
            rationale=verdict.rationale.strip(),
            active_seconds=seconds,
            gold=bool(assignment.item.gold),
            repeat=assignment.is_repeat,
        )
        Assignment.objects.filter(pk=assignment.pk).update(
            status=Assignment.Status.RATED
        )
        if not assignment.is_repeat:
            Item.objects.filter(pk=assignment.item_id).update(rated=F("rated") + 1)
        item = assignment.item
        transaction.on_commit(
            lambda: rating_stored(item.campaign_id, item.pk), robust=True
        )
    return rating


def skip(rater: Rater, token, reason: str) -> None:
    """Gives the task back (to others: never to this rater again), with a reason."""
    if reason not in SKIP_REASONS:
        raise TaskError("Give one of the skip reasons.")
    with transaction.atomic():
        assignment = _own_lease(rater, token)
        if assignment.status == Assignment.Status.SKIPPED:
            return
        if assignment.status == Assignment.Status.RATED:
            raise TaskError("This task is rated already.")
        _check_live(assignment)
        release(
            assignment.pk,
            assignment.item_id,
            assignment.repeat_of_id,
            Assignment.Status.SKIPPED,
        )
        Assignment.objects.filter(pk=assignment.pk).update(skip_reason=reason)
