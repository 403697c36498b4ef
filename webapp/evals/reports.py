"""The dashboards' numbers: the store read by `data`, the statistics of `stats`, and a
cache per campaign (or per leaderboard) that holds until a rating arrives.

A cached result is keyed on the version of the ratings it rests on (how many there
are and the newest id, `data.version`), so a new rating makes the next read compute
afresh and nothing else does; every resampling is seeded, so a page reads the same
twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import redis
from django.core.cache import cache

from webapp.evals import data, stats
from webapp.ratings.models import Campaign, Rating

T = TypeVar("T")
logger = logging.getLogger(__name__)

ALL = "all"
SIDES = ("left", "right")  # where the model under test (answer A) was shown
LEADERBOARD_BOOTSTRAP = 200
# Bootstrap resamples of Table 5's intervals and of the side split's: the issue's
# minimum. The cost grows with prompts times resamples (a million ratings over
# 10,000 prompts: 40 million draws for all, the categories and both sides), and
# with 1,000 each bound's Monte Carlo error is under a tenth of the bootstrap's
# standard deviation.
RESAMPLES = 1000
# Rows of the rater tables on the page (the downloads hold every rater).
SHOWN_RATERS = 100
CACHE_SECONDS = 24 * 3600


def cached(name: str, key: tuple, compute: Callable[[], T]) -> T:
    """`compute()`'s result, kept under `name` and `key` (which names what it rests
    on, the ratings' version included) in the cache that every process shares."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    full_key = f"evals:{name}:{digest}"
    try:
        value = cache.get(full_key)
    except redis.ConnectionError:
        # A command run while the site, and its Redis, are down: the same numbers,
        # computed and not kept.
        logger.warning("the cache cannot be reached; computing %s uncached", name)
        return compute()
    if value is None:
        value = compute()
        cache.set(full_key, value, CACHE_SECONDS)
    return value


def campaign_version(campaign: Campaign) -> tuple[int, int]:
    """The version of all the campaign's ratings (of every rater group)."""
    return data.version(Rating.objects.filter(item__campaign_id=campaign.pk))


# --- win rates --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """The win rate of one model pair on one slice of its ratings: a category
    (`"all"` for every one) or the side the model under test was shown on."""

    model: str
    baseline: str
    slice: str
    rate: stats.WinRate
    length_controlled: stats.LengthControlledWinRate | None = None

    @property
    def length_controlled_rate(self) -> float | None:
        lc = self.length_controlled
        return None if lc is None else lc.length_controlled

    def to_dict(self, slice_name: str = "category") -> dict[str, Any]:
        return {
            "model": self.model,
            "baseline": self.baseline,
            slice_name: self.slice,
            **self.rate.to_dict(),
        }


def _groups(key: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each distinct key, in order, and the positions of its entries."""
    if not key.size:
        return
    order = np.argsort(key, kind="stable")
    distinct, starts = np.unique(key[order], return_index=True)
    yield from zip(distinct.tolist(), np.split(order, starts[1:]), strict=True)


def _cells(
    items: data.Items,
    item: np.ndarray,
    slice_of_row: np.ndarray,
    slice_names: list[str],
    scores: np.ndarray,
    *,
    length_control: bool,
    n_resamples: int,
) -> list[Cell]:
    """A cell per model pair and slice that has ratings, pairs in order of names.

    Args:
        items: the campaign's items.
        item: [R] each row's item.
        slice_of_row: [R] each row's slice.
        slice_names: the slices' names.
        scores: [R, 7] each row's count of each score.
        length_control: whether to add the length-controlled win rate.
        n_resamples: bootstrap resamples of each interval.
    """
    rated = scores.sum(axis=1) > 0  # a side may have none of an item's ratings
    item, slice_of_row, scores = item[rated], slice_of_row[rated], scores[rated]
    n_models, n_slices = len(items.models), len(slice_names)
    pair = items.model_a[item] * n_models + items.model_b[item]
    per_row = data.outcomes(scores)
    cells = []
    for key, rows in _groups(pair * n_slices + slice_of_row):
        (a, b), piece = divmod(key // n_slices, n_models), key % n_slices
        _, prompt = np.unique(items.prompt[item[rows]], return_inverse=True)
        per_prompt = np.zeros((prompt.max() + 1, 3))
        np.add.at(per_prompt, prompt, per_row[rows])
        cells.append(
            Cell(
                model=items.models[a],
                baseline=items.models[b],
                slice=slice_names[piece],
                rate=stats.win_rate_from_counts(*per_prompt.T, n_resamples=n_resamples),
                length_controlled=(
                    _length_controlled(items, item[rows], scores[rows])
                    if length_control
                    else None
                ),
            )
        )
    return sorted(cells, key=lambda c: (c.model, c.baseline))


def _length_controlled(
    items: data.Items, item: np.ndarray, scores: np.ndarray
) -> stats.LengthControlledWinRate:
    row, score, count = data.score_rows(scores)
    return stats.length_controlled_win_rate(
        score, items.length_a[item[row]], items.length_b[item[row]], counts=count
    )


def win_rate_table(items: data.Items, counts: data.Counts) -> list[Cell]:
    """Table 5: per model pair, every category together ("all"), then each."""
    scores = counts.scores.sum(axis=1)
    options = {"length_control": True, "n_resamples": RESAMPLES}
    every = _cells(
        items, counts.item, np.zeros_like(counts.item), [ALL], scores, **options
    )
    each = _cells(
        items,
        counts.item,
        items.category[counts.item],
        items.categories,
        scores,
        **options,
    )
    by_pair: dict[tuple[str, str], list[Cell]] = {}
    for cell in every + each:
        by_pair.setdefault((cell.model, cell.baseline), []).append(cell)
    return [cell for pair in sorted(by_pair) for cell in by_pair[pair]]


def side_table(items: data.Items, counts: data.Counts) -> list[Cell]:
    """Per model pair, the win rate with the model under test shown left, and
    right."""
    n_rows = len(counts.item)
    return _cells(
        items,
        np.tile(counts.item, 2),
        np.repeat(np.arange(2), n_rows),
        list(SIDES),
        np.concatenate([counts.scores[:, 0], counts.scores[:, 1]]),
        length_control=False,
        n_resamples=RESAMPLES,
    )


# --- the campaign's page ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupNumbers:
    """One rater group's numbers in a campaign."""

    group: str
    n_ratings: int
    win_rates: tuple[Cell, ...]
    sides: tuple[Cell, ...]
    agreement: stats.Agreement
    category_agreement: tuple[tuple[str, stats.Agreement], ...]

    def win_rate_rows(self) -> list[dict[str, Any]]:
        """Table 5's rows, each with its length-controlled win rate."""
        return [
            {**c.to_dict(), "length_controlled": c.length_controlled_rate}
            for c in self.win_rates
        ]

    def agreement_rows(self) -> list[dict[str, Any]]:
        """Alpha over every category together ("all"), then each."""
        return [
            {"category": name, **a.to_dict()}
            for name, a in ((ALL, self.agreement), *self.category_agreement)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_ratings": self.n_ratings,
            "win_rates": self.win_rate_rows(),
            "sides": [c.to_dict("side") for c in self.sides],
            "agreement": self.agreement_rows(),
        }


@dataclasses.dataclass(frozen=True)
class CampaignReport:
    """Win rates, sides and agreement of each rater group present (human first),
    and the ratings adaptive overlap saved."""

    groups: tuple[GroupNumbers, ...]
    savings: stats.OverlapSavings | None

    def group(self, name: str) -> GroupNumbers | None:
        return next((g for g in self.groups if g.group == name), None)

    @property
    def human(self) -> GroupNumbers | None:
        return self.group(data.HUMAN)

    def table(self, name: str) -> list[dict[str, Any]]:
        """The rows of one table ("win_rates", "sides" or "agreement") of every
        group, each row naming its group."""
        return [
            {"raters": group.group, **row}
            for group in self.groups
            for row in group.to_dict()[name]
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": {g.group: g.to_dict() for g in self.groups},
            "adaptive_overlap": self.savings and self.savings.to_dict(),
        }


def _agreement(counts: data.Counts) -> stats.Agreement:
    row, score, count = data.score_rows(counts.scores.sum(axis=1))
    return stats.krippendorff_alpha(counts.item[row], score, counts=count)


def _group_numbers(items: data.Items, counts: data.Counts, group: str) -> GroupNumbers:
    mine = counts.of_group(group)
    category = items.category[mine.item]
    return GroupNumbers(
        group=group,
        n_ratings=mine.n_ratings,
        win_rates=tuple(win_rate_table(items, mine)),
        sides=tuple(side_table(items, mine)),
        agreement=_agreement(mine),
        category_agreement=tuple(
            (items.categories[c], _agreement(mine.rows(category == c)))
            for c in np.unique(category).tolist()
        ),
    )


def _savings(campaign: Campaign, items: data.Items) -> stats.OverlapSavings | None:
    """Against a fixed K max, over the items whose ratings are all in (gold
    apart)."""
    if not campaign.adaptive:
        return None
    done = (items.gold == 0) & (items.rated >= items.needed)
    return stats.ratings_saved(items.rated[done], k_max=campaign.k_max)


def _campaign_groups(
    campaign: Campaign, items: data.Items, counts: data.Counts
) -> CampaignReport:
    order = sorted(counts.groups, key=lambda g: list(data.GROUPS).index(g))
    return CampaignReport(
        groups=tuple(_group_numbers(items, counts, g) for g in order),
        savings=_savings(campaign, items),
    )


# --- raters -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RaterWinRate:
    """One rater's verdicts on one model pair (counted ratings): shares and the win
    rate, ties half. No interval: a rater's ratings are too few to resample."""

    rater: str
    model: str
    baseline: str
    win_rate: float
    wins: float
    ties: float
    losses: float
    n_ratings: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RaterReport:
    """The human raters' quality table and their win rates per model pair."""

    quality: tuple[stats.RaterQuality, ...]
    win_rates: tuple[RaterWinRate, ...]

    @property
    def flagged(self) -> int:
        return sum(1 for row in self.quality if row.flags)

    @property
    def shown_quality(self) -> list[stats.RaterQuality]:
        """The page's rows: flagged raters first, then those with most ratings."""
        ranked = sorted(self.quality, key=lambda q: (not q.flags, -q.n_ratings))
        return ranked[:SHOWN_RATERS]

    @property
    def shown_win_rates(self) -> list[RaterWinRate]:
        ranked = sorted(self.win_rates, key=lambda w: -w.n_ratings)
        return ranked[:SHOWN_RATERS]

    def to_dict(self) -> dict[str, Any]:
        return {
            "quality": [q.to_dict() for q in self.quality],
            "win_rates": [w.to_dict() for w in self.win_rates],
        }


def _rater_win_rates(
    items: data.Items, ratings: data.CampaignRatings
) -> list[RaterWinRate]:
    n_models = len(items.models)
    item = ratings.item[ratings.counts]
    pair = items.model_a[item] * n_models + items.model_b[item]
    keys, key = np.unique(
        ratings.rater[ratings.counts] * n_models**2 + pair, return_inverse=True
    )
    outcome = 1 - np.sign(ratings.score[ratings.counts])  # wins, ties, losses
    table = np.bincount(key * 3 + outcome, minlength=len(keys) * 3).reshape(-1, 3)
    rows = []
    for key_value, (wins, ties, losses) in zip(
        keys.tolist(), table.tolist(), strict=True
    ):
        r, p = divmod(key_value, n_models**2)
        a, b = divmod(p, n_models)
        n = wins + ties + losses
        rows.append(
            RaterWinRate(
                rater=ratings.names[r],
                model=items.models[a],
                baseline=items.models[b],
                win_rate=(wins + ties / 2) / n,
                wins=wins / n,
                ties=ties / n,
                losses=losses / n,
                n_ratings=n,
            )
        )
    return sorted(rows, key=lambda row: (row.model, row.baseline, row.rater))


def _rater_report(items: data.Items, ratings: data.CampaignRatings) -> RaterReport:
    """The table of the human raters."""
    human = ratings.of_group(data.HUMAN)
    quality = stats.rater_quality(
        human.rater,
        human.item,
        human.score,
        np.where(human.model_left, "left", "right"),
        gold=items.gold[human.item],
        active_seconds=human.active_seconds,
        model_a=items.model_a[human.item],
        model_b=items.model_b[human.item],
    )
    return RaterReport(
        quality=tuple(
            dataclasses.replace(q, rater=human.names[q.rater]) for q in quality
        ),
        win_rates=tuple(_rater_win_rates(items, human)),
    )


# --- a campaign's numbers -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CampaignNumbers:
    """Everything the campaign's dashboard shows, from one read of its ratings."""

    report: CampaignReport
    raters: RaterReport


def campaign_numbers(
    campaign: Campaign, version: tuple[int, int] | None = None
) -> CampaignNumbers:
    """The campaign's numbers and rater table, computed together once per version of
    its ratings: both rest on every rating's columns, read once."""

    def compute() -> CampaignNumbers:
        items = data.campaign_items(campaign.pk)
        ratings = data.campaign_ratings(campaign.pk, items)
        counts = ratings.score_counts(len(items.ids))
        return CampaignNumbers(
            report=_campaign_groups(campaign, items, counts),
            raters=_rater_report(items, ratings),
        )

    version = version or campaign_version(campaign)
    return cached("numbers", (campaign.pk, version), compute)


def campaign_report(
    campaign: Campaign, version: tuple[int, int] | None = None
) -> CampaignReport:
    """The campaign's win rates, sides and agreement (see `campaign_numbers`)."""
    return campaign_numbers(campaign, version).report


def rater_report(
    campaign: Campaign, version: tuple[int, int] | None = None
) -> RaterReport:
    """The campaign's rater table (see `campaign_numbers`)."""
    return campaign_numbers(campaign, version).raters


# --- the leaderboard --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LeaderboardOptions:
    campaign_id: int | None = None
    group: str = data.HUMAN
    anchor: str | None = None
    min_battles: int = 0
    interval: str = "bootstrap"


@dataclasses.dataclass(frozen=True)
class LeaderboardResult:
    """The leaderboard, or why there is none (no battles, models that never met)."""

    board: stats.Leaderboard | None
    problem: str = ""


def leaderboard(options: LeaderboardOptions) -> LeaderboardResult:
    """Bradley-Terry on the Elo scale over the options' battles, once per version of
    the ratings they come from."""
    found = data.ratings(options.campaign_id, options.group)

    def compute() -> LeaderboardResult:
        model_a, model_b, outcomes, counts = data.battle_counts(
            options.campaign_id, options.group
        )
        if not counts.sum():
            return LeaderboardResult(None, "No battles yet.")
        try:
            board = stats.bradley_terry(
                model_a,
                model_b,
                outcomes,
                counts=counts,
                min_battles=options.min_battles,
                anchor=options.anchor or None,
                interval=options.interval,
                n_bootstrap=LEADERBOARD_BOOTSTRAP,
            )
        except ValueError as exc:
            return LeaderboardResult(None, str(exc).capitalize() + ".")
        return LeaderboardResult(board)

    return cached("leaderboard", (options, data.version(found)), compute)
