"""Reading the rating store for the dashboards: SQL aggregates, and the per-rating
columns only where a statistic needs them, as NumPy arrays.

Which ratings count where:

- Raters fall in groups by kind: "human" (people rating here and imported studies'
  raters), "judge" (automatic raters) and "simulated". Each group's numbers are kept
  apart; "human" is what the dashboards show first and what the commands report.
- Win rates, agreement, length control and the leaderboard count neither gold items
  nor swapped repeats; those two measure raters, in the rater table.
- A campaign's pairs are its items' (model of answer A, model of answer B): the model
  under test and the baseline of a generated campaign, each pair of an imported one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from django.db.models import Count, Max, Q, QuerySet
from django.db.models.functions import Length

from webapp.ratings.models import Item, Rater, Rating

HUMAN = "human"
GROUPS: dict[str, tuple[str, ...]] = {
    HUMAN: (Rater.Kind.HUMAN, Rater.Kind.IMPORTED),
    "judge": (Rater.Kind.JUDGE,),
    "simulated": (Rater.Kind.SIMULATED,),
}
GROUP_OF_KIND = {kind: group for group, kinds in GROUPS.items() for kind in kinds}

# Conditional counts of one GROUP BY: the model under test's wins, ties and losses.
OUTCOME_COUNTS = {
    "wins": Count("pk", filter=Q(score__gt=0)),
    "ties": Count("pk", filter=Q(score=0)),
    "losses": Count("pk", filter=Q(score__lt=0)),
}


def ratings(campaign_id: int | None = None, group: str = HUMAN) -> QuerySet[Rating]:
    """The ratings of one rater group, in one campaign or in all of them."""
    found = Rating.objects.filter(rater__kind__in=GROUPS[group])
    return found if campaign_id is None else found.filter(item__campaign_id=campaign_id)


def counted(found: QuerySet[Rating]) -> QuerySet[Rating]:
    """Those that count in win rates: no gold items, no swapped repeats."""
    return found.filter(gold=False, repeat=False)


def version(found: QuerySet[Rating]) -> tuple[int, int]:
    """How many ratings and the newest one's id: a new rating changes both."""
    row = found.aggregate(n=Count("pk"), last=Max("pk"))
    return row["n"], row["last"] or 0


def columns(rows, width: int) -> list[list]:
    """Query rows as `width` columns (empty ones when there are no rows)."""
    rows = list(rows)
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * width


def codes(values: list) -> tuple[list, np.ndarray]:
    """The distinct values, sorted, and each value's position among them."""
    distinct, inverse = np.unique(np.asarray(values, dtype=object), return_inverse=True)
    return distinct.tolist(), inverse.reshape(-1)


@dataclasses.dataclass(frozen=True)
class Items:
    """A campaign's items as columns, in order of id; models and categories as
    positions in `models` and `categories`."""

    ids: np.ndarray  # [I]
    prompt: np.ndarray  # [I] prompt ids
    category: np.ndarray  # [I]
    categories: list[str]
    model_a: np.ndarray  # [I]
    model_b: np.ndarray  # [I]
    models: list[str]
    length_a: np.ndarray  # [I] characters of answer A
    length_b: np.ndarray  # [I]
    gold: np.ndarray  # [I] 1: answer A known better, -1: answer B, 0: not gold
    rated: np.ndarray  # [I] ratings the queue counted (swapped repeats apart)
    needed: np.ndarray  # [I]

    def positions(self, item_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ids, item_ids)


def campaign_items(campaign_id: int) -> Items:
    rows = (
        Item.objects.filter(campaign_id=campaign_id)
        .order_by("pk")
        .values_list(
            "pk",
            "prompt_id",
            "prompt__category",
            "answer_a__model",
            "answer_b__model",
            Length("answer_a__text"),
            Length("answer_b__text"),
            "gold",
            "rated",
            "needed",
        )
    )
    ids, prompt, category, a, b, length_a, length_b, gold, rated, needed = columns(
        rows, 10
    )
    categories, category_code = codes(category)
    models, model_code = codes(a + b)
    return Items(
        ids=np.asarray(ids, dtype=np.int64),
        prompt=np.asarray(prompt, dtype=np.int64),
        category=category_code,
        categories=categories,
        model_a=model_code[: len(a)],
        model_b=model_code[len(a) :],
        models=models,
        length_a=np.asarray(length_a, dtype=np.float64),
        length_b=np.asarray(length_b, dtype=np.float64),
        gold=np.select(
            [np.asarray(gold) == "a", np.asarray(gold) == "b"], [1, -1], 0
        ).astype(np.int64),
        rated=np.asarray(rated, dtype=np.int64),
        needed=np.asarray(needed, dtype=np.int64),
    )


@dataclasses.dataclass(frozen=True)
class Counts:
    """Counted ratings of a campaign, one row per (item, side shown, score, rater
    group) with how many ratings it stands for."""

    item: np.ndarray  # [R] position in the campaign's `Items`
    model_left: np.ndarray  # [R] bool: answer A (the model under test) shown left
    score: np.ndarray  # [R] from answer A's side
    group: np.ndarray  # [R] position in `groups`
    groups: list[str]
    count: np.ndarray  # [R]

    def rows(self, keep: np.ndarray) -> Counts:
        """The rows where `keep` is true."""
        return dataclasses.replace(self, **{f: getattr(self, f)[keep] for f in _ROWS})

    def of_group(self, name: str) -> Counts:
        code = self.groups.index(name) if name in self.groups else -1
        return self.rows(self.group == code)


_ROWS = ("item", "model_left", "score", "group", "count")


def campaign_counts(campaign_id: int, items: Items) -> Counts:
    """The campaign's counted ratings of every rater group, by one GROUP BY."""
    rows = (
        counted(Rating.objects.filter(item__campaign_id=campaign_id))
        .values("item_id", "left", "score", "rater__kind")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("item_id", "left", "score", "rater__kind", "n")
    )
    item, left, score, kind, count = columns(rows, 5)
    groups, group = codes([GROUP_OF_KIND[k] for k in kind])
    return Counts(
        item=items.positions(np.asarray(item, dtype=np.int64)),
        model_left=np.asarray(left) == "a",
        score=np.asarray(score, dtype=np.int64),
        group=group,
        groups=groups,
        count=np.asarray(count, dtype=np.int64),
    )


@dataclasses.dataclass(frozen=True)
class PerRating:
    """Every rating of the campaign's human raters, oldest first (gold items and
    swapped repeats included: they are what rater quality rests on)."""

    rater: np.ndarray  # [N] rater ids
    item: np.ndarray  # [N] position in the campaign's `Items`
    score: np.ndarray  # [N] from answer A's side
    model_left: np.ndarray  # [N] bool: answer A shown left
    active_seconds: np.ndarray  # [N] NaN where not measured
    counts: np.ndarray  # [N] bool: neither gold nor a swapped repeat


def human_ratings(campaign_id: int, items: Items) -> PerRating:
    rows = (
        ratings(campaign_id)
        .order_by("pk")
        .values_list(
            "rater_id", "item_id", "score", "left", "active_seconds", "gold", "repeat"
        )
    )
    rater, item, score, left, seconds, gold, repeat = columns(rows, 7)
    return PerRating(
        rater=np.asarray(rater, dtype=np.int64),
        item=items.positions(np.asarray(item, dtype=np.int64)),
        score=np.asarray(score, dtype=np.int64),
        model_left=np.asarray(left) == "a",
        active_seconds=np.asarray(seconds, dtype=np.float64),
        counts=~(np.asarray(gold, dtype=bool) | np.asarray(repeat, dtype=bool)),
    )


def rater_names(ids: list[int]) -> dict[int, str]:
    return dict(Rater.objects.filter(pk__in=ids).values_list("pk", "name"))


def battle_counts(
    campaign_id: int | None, group: str = HUMAN
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Battles by (model A, model B, outcome for A) with their counts, as
    `stats.bradley_terry(..., counts=...)` takes them."""
    rows = (
        counted(ratings(campaign_id, group))
        .values("item__answer_a__model", "item__answer_b__model")
        .annotate(**OUTCOME_COUNTS)
        .order_by()
        .values_list("item__answer_a__model", "item__answer_b__model", *OUTCOME_COUNTS)
    )
    model_a, model_b, outcomes, counts = [], [], [], []
    for a, b, *wins_ties_losses in rows:
        for outcome, count in zip((1.0, 0.5, 0.0), wins_ties_losses, strict=True):
            model_a.append(a)
            model_b.append(b)
            outcomes.append(outcome)
            counts.append(count)
    return model_a, model_b, np.asarray(outcomes), np.asarray(counts, dtype=np.int64)


def prompt_counts(found: QuerySet[Rating]) -> tuple[list, list, list]:
    """Wins, ties and losses on each prompt (a GROUP BY prompt)."""
    rows = (
        found.values("item__prompt_id")
        .annotate(**OUTCOME_COUNTS)
        .order_by()
        .values_list(*OUTCOME_COUNTS)
    )
    wins, ties, losses = columns(rows, 3)
    return wins, ties, losses
