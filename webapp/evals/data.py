"""Reading the rating store for the dashboards, as NumPy arrays: a campaign's items,
and every rating's columns in one query (the rater table needs them, and the
per-item counts of Table 5 are a bincount of them); SQL aggregates for the
leaderboard's battles and a category's per-prompt counts.

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
import math

import numpy as np
import psycopg
from django.db import connections
from django.db.models import (
    Case,
    Count,
    F,
    FloatField,
    Max,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Length

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


SCORES = np.arange(-3, 4)
SIDES = ("a", "b")  # answer A shown on the left, on the right


@dataclasses.dataclass(frozen=True)
class Counts:
    """Counted ratings of a campaign, one row per item and rater group: how many
    ratings gave each score with answer A shown on the left, and on the right."""

    item: np.ndarray  # [R] position in the campaign's `Items`
    group: np.ndarray  # [R] position in `groups`
    groups: list[str]
    scores: np.ndarray  # [R, 2, 7]: [row, A left / A right, score + 3]

    def rows(self, keep: np.ndarray) -> Counts:
        """The rows where `keep` is true."""
        return dataclasses.replace(
            self, item=self.item[keep], group=self.group[keep], scores=self.scores[keep]
        )

    def of_group(self, name: str) -> Counts:
        code = self.groups.index(name) if name in self.groups else -1
        return self.rows(self.group == code)

    @property
    def n_ratings(self) -> int:
        return int(self.scores.sum())


def outcomes(scores: np.ndarray) -> np.ndarray:
    """[..., 3] wins, ties and losses of the model under test, from [..., 7] counts
    of each score."""
    return np.stack(
        [scores[..., 4:].sum(-1), scores[..., 3], scores[..., :3].sum(-1)], axis=-1
    )


def score_rows(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[R, 7] counts of each score as the (row, score, count) of each nonzero count,
    as the statistics take ratings with `counts`."""
    row, column = np.nonzero(scores)
    return row, SCORES[column], scores[row, column]


@dataclasses.dataclass(frozen=True)
class CampaignRatings:
    """Every rating of a campaign, oldest first, with its rater's group (gold items
    and swapped repeats included: they are what rater quality rests on)."""

    rater: np.ndarray  # [N] rater ids
    group: np.ndarray  # [N] position of the rater's group in `groups`
    groups: list[str]
    names: dict[int, str]  # the raters' names by id
    item: np.ndarray  # [N] position in the campaign's `Items`
    score: np.ndarray  # [N] from answer A's side
    model_left: np.ndarray  # [N] bool: answer A shown left
    active_seconds: np.ndarray  # [N] NaN where not measured
    counts: np.ndarray  # [N] bool: neither gold nor a swapped repeat

    def of_group(self, name: str) -> CampaignRatings:
        code = self.groups.index(name) if name in self.groups else -1
        keep = self.group == code
        if keep.all():
            return self
        return dataclasses.replace(
            self,
            **{
                field: getattr(self, field)[keep]
                for field in ("rater", "group", "item", "score", "model_left",
                              "active_seconds", "counts")
            },
        )  # fmt: skip

    def score_counts(self, n_items: int) -> Counts:
        """The counted ratings by item and group (a GROUP BY in NumPy: these
        columns are read anyway for the rater table, and a second pass over a
        million ratings in SQL took 0.5 s)."""
        counted = self.counts
        cell = self.group[counted] * n_items + self.item[counted]
        column = (~self.model_left[counted]) * len(SCORES) + self.score[counted] + 3
        n_cells = len(self.groups) * n_items
        width = len(SIDES) * len(SCORES)
        table = np.bincount(cell * width + column, minlength=n_cells * width).reshape(
            n_cells, len(SIDES), len(SCORES)
        )
        present = np.flatnonzero(table.sum(axis=(1, 2)))
        group, item = np.divmod(present, n_items)
        return Counts(item=item, group=group, groups=self.groups, scores=table[present])


def campaign_ratings(campaign_id: int, items: Items) -> CampaignRatings:
    """Every rating of the campaign, of every rater group, in one query."""
    rows = (
        Rating.objects.filter(item__campaign_id=campaign_id)
        .order_by()
        .values(
            rating_pk=F("pk"),
            rater_pk=F("rater_id"),
            item_pk=F("item_id"),
            points=F("score"),
            model_left=Case(When(left="a", then=Value(True)), default=Value(False)),
            seconds=Coalesce(
                "active_seconds", Value(math.nan), output_field=FloatField()
            ),
            counted=Case(
                When(gold=False, repeat=False, then=Value(True)), default=Value(False)
            ),
        )
    )
    found = fetch_columns(
        rows,
        {"rating_pk": "i8", "rater_pk": "i8", "item_pk": "i8", "points": "i2",
         "model_left": "bool", "seconds": "f8", "counted": "bool"},
    )  # fmt: skip
    oldest_first = np.argsort(found["rating_pk"], kind="stable")
    found = {name: column[oldest_first] for name, column in found.items()}
    rater_ids, rater = np.unique(found["rater_pk"], return_inverse=True)
    kinds, names = _raters(rater_ids.tolist())
    groups, group_of_rater = codes([GROUP_OF_KIND[kind] for kind in kinds])
    return CampaignRatings(
        rater=found["rater_pk"],
        group=np.asarray(group_of_rater, dtype=np.int64)[rater],
        groups=groups,
        names=dict(zip(rater_ids.tolist(), names, strict=True)),
        item=items.positions(found["item_pk"]),
        score=found["points"].astype(np.int64),
        model_left=found["model_left"],
        active_seconds=found["seconds"],
        counts=found["counted"],
    )


def _raters(ids: list[int]) -> tuple[list[str], list[str]]:
    """The kinds and names of the raters with these ids, in their order."""
    found = {
        pk: (kind, name)
        for pk, kind, name in Rater.objects.filter(pk__in=ids).values_list(
            "pk", "kind", "name"
        )
    }
    kinds, names = columns((found[pk] for pk in ids), 2)
    return kinds, names


# Each column type as NumPy reads it, and PostgreSQL's function that writes a value
# of it in binary (big-endian) form.
_BINARY = {
    "i8": (">i8", "int8send", "int8"),
    "i4": (">i4", "int4send", "int4"),
    "i2": (">i2", "int2send", "int2"),
    "f8": (">f8", "float8send", "float8"),
    "bool": ("?", "boolsend", "bool"),
}


def fetch_columns(rows: QuerySet, types: dict[str, str]) -> dict[str, np.ndarray]:
    """The columns of a `values()` query, none of them NULL, as NumPy arrays, in
    the same (unspecified) order of rows for every column.

    `types` maps each column to "i8", "i4", "i2", "f8" or "bool". On PostgreSQL each
    column comes back as one bytea, its values' binary forms joined in SQL
    (`string_agg(int8send(x), '')`), which NumPy reads in one `frombuffer`: no
    Python object per value, where fetching a million rows as tuples takes
    seconds. Aggregates of one query read the rows in one order, so the columns
    stay aligned. Elsewhere, row by row.
    """
    connection = connections[rows.db]
    dtypes = {name: np.dtype(_BINARY[t][0]) for name, t in types.items()}
    if connection.vendor != "postgresql":
        values = columns(rows.values_list(*types), len(types))
        return {
            name: np.asarray(column, dtype=dtypes[name].newbyteorder("="))
            for name, column in zip(types, values, strict=True)
        }
    quote = connection.ops.quote_name
    joined = ", ".join(
        f"string_agg({_BINARY[t][1]}(rows.{quote(name)}::{_BINARY[t][2]}), '')"
        for name, t in types.items()
    )
    sql, params = rows.values(*types).query.sql_with_params()
    connection.ensure_connection()
    # Django's cursors bind parameters on the client, and such a cursor cannot ask
    # for binary results: as hex text a million rows' columns took 0.13 s longer.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"SELECT {joined} FROM ({sql}) rows", params, binary=True)
        blobs = cursor.fetchone()
    return {
        name: np.frombuffer(blob or b"", dtypes[name]).astype(
            dtypes[name].newbyteorder("=")
        )
        for (name, blob) in zip(types, blobs, strict=True)
    }


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
