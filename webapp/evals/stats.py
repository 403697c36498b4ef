"""The numbers of the evaluation dashboards, in plain NumPy and SciPy (no Django).

Every function takes plain columns as they come out of SQL, one entry per rating (or
per battle), and returns a small frozen dataclass whose `to_dict()` is what the
management commands print as JSON. The app `webapp.evals` reads the database, calls
these and renders.

Conventions used throughout:

- A score is one rating on the 7-point scale, -3..3. For win rates it is seen from the
  model under test (above 0 a win, 0 a tie, below 0 a loss); for rater quality from
  `model_a`'s side, whichever side of the screen `model_a` was shown on.
- An outcome is one battle's result for its first model: 1 a win, 0.5 a tie, 0 a loss
  (`outcomes_from_scores` turns scores into outcomes).
- Rates and shares are fractions; a rate with nothing to count is None.
- Resampling is seeded, so a page reads the same twice.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components
from scipy.special import expit
from threadpoolctl import threadpool_limits

# Largest Newton step, in logits (~174 Elo): keeps the first steps from overshooting
# where the likelihood is flat, and lets a model that never loses drift up slowly.
_MAX_STEP = 1.0
_NEWTON_TOL = 1e-10
_NEWTON_MAX_ITER = 200
# Bradley-Terry's ridge on the strengths (a Gaussian prior of sd 1,000 logits): a
# millionth of what one battle at even odds tells (p(1 - p) = 1/4), so wherever the
# maximum-likelihood fit exists this is it to well under 0.001 Elo; where it does not
# (a model that never lost, or one absent from a bootstrap resample) the fit stays
# finite instead of the Hessian becoming singular.
_BT_RIDGE = 1e-6


class _Record:
    """A frozen dataclass that prints as JSON."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _maybe(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _labels(scores: ArrayLike) -> np.ndarray:
    """Win (1), tie (0) or loss (-1) of each score."""
    return np.sign(np.asarray(scores, dtype=np.float64)).astype(np.int64)


def outcomes_from_scores(scores: ArrayLike) -> np.ndarray:
    """Battle outcomes (1 a win, 0.5 a tie, 0 a loss) of 7-point scores."""
    return (_labels(scores) + 1) / 2


def _index(values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, sorted, and each entry's position among them."""
    values = np.asarray(values)
    if values.dtype.kind in "OSU":
        # Sorting two million model names took 0.8-5 s; the distinct names are few,
        # a dict finds them in one pass, and a binary search places each entry.
        distinct = np.array(sorted(dict.fromkeys(values.tolist())), dtype=values.dtype)
        return distinct, np.searchsorted(distinct, values)
    if values.dtype.kind in "iu" and values.size:
        lowest = values.min()
        if values.max() - lowest < 4 * values.size + 1024:
            # Database ids, positions, scores: one count per possible value finds
            # the distinct ones in linear time, where sorting a million took
            # 0.1-0.3 s.
            present = np.bincount(values - lowest) > 0
            position = np.cumsum(present) - 1
            distinct = np.flatnonzero(present) + lowest
            return distinct.astype(values.dtype), position[values - lowest]
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse.reshape(-1)


def _table(
    rows: np.ndarray,
    columns: np.ndarray,
    n_columns: int,
    weights: ArrayLike | None = None,
) -> np.ndarray:
    """[max(rows) + 1, n_columns] how many entries fall in each (row, column), each
    entry counting its weight (default one)."""
    n_rows = int(rows.max()) + 1 if rows.size else 0
    counts = np.bincount(
        rows * n_columns + columns, weights, minlength=n_rows * n_columns
    )
    return counts.reshape(n_rows, n_columns)


def _shares(
    groups: np.ndarray, hits: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the share of records that hit (NaN where none) and the count."""
    counts = np.bincount(groups, minlength=n_groups)
    hit_counts = np.bincount(groups, weights=hits, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hit_counts / counts, counts


# --- Table 5: win rate with a bootstrap interval over prompts -------------------------


@dataclass(frozen=True)
class WinRate(_Record):
    """One cell of Table 5: a model against a baseline on one set of prompts.

    `wins`, `ties` and `losses` are shares of the ratings; the win rate counts a tie
    as half a win; the interval is the bootstrap percentile interval over prompts.
    """

    win_rate: float
    ci_low: float
    ci_high: float
    wins: float
    ties: float
    losses: float
    n_ratings: int
    n_prompts: int


def win_rate(
    prompt_ids: ArrayLike,
    scores: ArrayLike,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> WinRate:
    """Table 5 from per-rating columns: each rating's prompt and score.

    Args:
        prompt_ids: the prompt of each rating; a prompt's ratings are resampled
            together.
        scores: each rating's score seen from the model under test.
        n_resamples: bootstrap resamples of the prompts.
        seed: seeds the resampling (see `win_rate_from_counts`).
        confidence: coverage of the interval.

    Returns:
        The win rate, its interval, the W/T/L shares and the counts.
    """
    _, prompt = _index(prompt_ids)
    per_prompt = _table(prompt, 1 - _labels(scores), 3)  # wins, ties, losses
    return win_rate_from_counts(
        *per_prompt.T, n_resamples=n_resamples, seed=seed, confidence=confidence
    )


def win_rates_by(
    groups: ArrayLike,
    prompt_ids: ArrayLike,
    scores: ArrayLike,
    **options: Any,
) -> dict[Any, WinRate]:
    """`win_rate` for each group of ratings (category, side shown, rater, ...).

    Args:
        groups: the group of each rating.
        prompt_ids: the prompt of each rating.
        scores: each rating's score seen from the model under test.
        **options: passed on to `win_rate` (same seed for every group).

    Returns:
        The groups, in sorted order, and their win rates.
    """
    names, group = _index(groups)
    prompts = _split_by(group, prompt_ids, len(names))
    scores = _split_by(group, scores, len(names))
    return {
        name.item(): win_rate(p, s, **options)
        for name, p, s in zip(names, prompts, scores, strict=True)
    }


def win_rate_from_counts(
    wins: ArrayLike,
    ties: ArrayLike,
    losses: ArrayLike,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> WinRate:
    """Table 5 from per-prompt counts (as a SQL GROUP BY prompt gives them).

    The win rate is (wins + ties / 2) / ratings. Bootstrap resample b draws the
    prompts of row b of `numpy.random.default_rng(seed).integers(0, n_prompts,
    size=(n_resamples, n_prompts), dtype=numpy.int32)`, with replacement, and the
    interval is the percentile interval (NumPy's default, linear, quantiles) of the
    resamples' win rates.

    Args:
        wins: wins of the model under test on each prompt.
        ties: ties on each prompt.
        losses: losses on each prompt.
        n_resamples: bootstrap resamples (the issue asks at least 1,000).
        seed: seeds the resampling.
        confidence: coverage of the interval.

    Returns:
        The win rate, its interval, the W/T/L shares and the counts.

    Raises:
        ValueError: there is no rating.
    """
    counts = np.stack([np.asarray(c, dtype=np.float64) for c in (wins, ties, losses)])
    counts = counts[:, counts.sum(axis=0) > 0]  # [3, prompts]
    n_ratings = counts.sum()
    if n_ratings == 0:
        raise ValueError("no ratings to compute a win rate from")
    points = counts[0] + counts[1] / 2
    rates = _resampled_win_rates(points, counts.sum(axis=0), n_resamples, seed)
    low, high = np.quantile(rates, [(1 - confidence) / 2, (1 + confidence) / 2])
    shares = counts.sum(axis=1) / n_ratings
    return WinRate(
        win_rate=float(points.sum() / n_ratings),
        ci_low=float(low),
        ci_high=float(high),
        wins=float(shares[0]),
        ties=float(shares[1]),
        losses=float(shares[2]),
        n_ratings=int(n_ratings),
        n_prompts=int(counts.shape[1]),
    )


# Prompt indices drawn at a time (4 MB of int32): a block that stays in the CPU's
# cache while it is read took half the time of one of 64 MB.
_DRAWS_PER_BLOCK = 1_000_000


def _resampled_win_rates(
    points: np.ndarray, ratings: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """Win rate of each bootstrap resample of the prompts.

    The rows are drawn in blocks; consecutive calls of `integers` continue the same
    stream, so the rows are those of one call for all resamples.
    """
    rng = np.random.default_rng(seed)
    n_prompts = len(points)
    # Each prompt's points and ratings as one complex number: one gather per drawn
    # prompt instead of two. Both are whole numbers of half points or ratings, so
    # the sums are exact in any order.
    both = 2 * points + 1j * ratings
    totals = np.empty(n_resamples, dtype=np.complex128)
    block = max(1, _DRAWS_PER_BLOCK // n_prompts)
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        drawn = rng.integers(0, n_prompts, size=(rows, n_prompts), dtype=np.int32)
        totals[start : start + rows] = both[drawn].sum(axis=1)
    return totals.real / (2 * totals.imag)


# --- Leaderboard: Bradley-Terry on the Elo scale --------------------------------------


@dataclass(frozen=True)
class LeaderboardRow(_Record):
    """One model on the leaderboard.

    `ci_low`/`ci_high` are the interval named by the leaderboard's `interval`, and the
    rank band comes from them; both intervals are given as well.
    """

    model: str
    rating: float
    ci_low: float
    ci_high: float
    rank: int
    n_battles: int
    bootstrap_low: float
    bootstrap_high: float
    sandwich_low: float
    sandwich_high: float


@dataclass(frozen=True)
class Leaderboard(_Record):
    """Bradley-Terry ratings, best first, and the pairwise win rates.

    `win_rates[i][j]` is the share of points (ties half) that row i's model took from
    row j's in their battles, None where they never met; `predicted_win_rates[i][j]`
    is what the ratings predict. Models with fewer battles than the minimum are in
    `excluded` and in none of the numbers.
    """

    rows: tuple[LeaderboardRow, ...]
    win_rates: tuple[tuple[float | None, ...], ...]
    predicted_win_rates: tuple[tuple[float | None, ...], ...]
    excluded: tuple[str, ...]
    interval: str


@dataclass(frozen=True)
class _Cells:
    """Battles grouped by (model a, model b, outcome), with a < b."""

    models: np.ndarray  # [M] names
    a: np.ndarray  # [K] index of model a
    b: np.ndarray  # [K]
    outcome: np.ndarray  # [K] outcome for model a
    count: np.ndarray  # [K] battles in the cell
    excluded: tuple[str, ...]


def bradley_terry(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcomes: ArrayLike,
    *,
    counts: ArrayLike | None = None,
    min_battles: int = 0,
    anchor: str | None = None,
    base_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    interval: str = "bootstrap",
    n_bootstrap: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
) -> Leaderboard:
    """A leaderboard by Bradley-Terry maximum likelihood on pairwise outcomes.

    P(i beats j) = 1 / (1 + base ** ((r_j - r_i) / scale)); a tie counts as half a win
    and half a loss (outcome 0.5 in the likelihood, as LMArena's `arena-rank` does).
    Ratings average `base_rating`, or the anchor model has exactly `base_rating`.
    Intervals: the percentile bootstrap, resampling battles with replacement (a
    multinomial draw over the distinct (a, b, outcome) cells, the same thing) and
    refitting; and the sandwich (robust) estimator H⁻¹ G H⁻¹ with H the Hessian of the
    likelihood and G the sum of the battles' outer score products, at the normal
    quantile. A model's rank is 1 + the number of models whose lower bound is above
    its upper bound. The models must all be connected by battles.

    Sparse data never make the fit fail: every fit (the ratings and each bootstrap
    refit) maximises the likelihood minus a tiny ridge, 1e-6 / 2 times the sum of
    squared strengths in logits. Where the maximum-likelihood fit exists it is that fit
    to well under 0.001 Elo; where it does not, the ridge keeps it finite: a model that
    never lost (in the battles, or in a resample of them) is rated some 2,000-3,500
    Elo above those it beat, and a model absent from a resample sits at the mean.
    Such resamples widen the model's bootstrap interval accordingly; `min_battles`
    leaves models with too few battles out.

    Args:
        model_a: the first model of each battle (or cell of battles).
        model_b: the second model.
        outcomes: the outcome for model_a: 1 a win, 0.5 a tie, 0 a loss.
        counts: how many battles each row stands for (default one each).
        min_battles: models with fewer battles are left out, with their battles.
        anchor: the model whose rating is fixed at `base_rating`, or None for a mean
            of `base_rating`.
        base_rating: the mean rating, or the anchor's.
        scale: rating points per factor `base` in the odds.
        base: see `scale` (400 and 10: the Elo scale).
        interval: "bootstrap" or "sandwich": which interval fills `ci_low`/`ci_high`
            and sets the ranks.
        n_bootstrap: bootstrap resamples (at least 100 for the dashboards).
        seed: seeds the bootstrap.
        confidence: coverage of the intervals.

    Returns:
        The leaderboard.

    Raises:
        ValueError: a model battles itself, an unknown interval or anchor, or models
            that never met each other even indirectly.
    """
    if interval not in ("bootstrap", "sandwich"):
        raise ValueError(
            f"interval must be 'bootstrap' or 'sandwich', not {interval!r}"
        )
    cells = _cells(model_a, model_b, outcomes, counts, min_battles)
    n_models = len(cells.models)
    points = _pair_points(cells, cells.count[None])[0]
    _check_connected(cells.models, points)
    gauge = _gauge(cells.models, anchor)
    # One row and column per model: matrices this small solve fastest on one BLAS
    # thread (on a busy two-core machine, 100 x 100 took 0.15 s on two, 0.1 ms on one).
    with threadpool_limits(limits=1, user_api="blas"):
        strength = _fit_strengths(points[None])[0]
        sandwich_sd = _sandwich_sd(cells, strength, np.eye(n_models) - gauge)
        resampled = _bootstrap_strengths(cells, strength, n_bootstrap, seed)
    factor = scale / math.log(base)

    def to_ratings(s: np.ndarray) -> np.ndarray:  # [..., M] strengths
        return base_rating + factor * (s - s @ gauge.T)

    ratings = to_ratings(strength)
    z = stats.norm.ppf((1 + confidence) / 2)
    half_width = z * factor * sandwich_sd
    boot_low, boot_high = np.quantile(
        to_ratings(resampled), [(1 - confidence) / 2, (1 + confidence) / 2], axis=0
    )
    low, high = (
        (boot_low, boot_high)
        if interval == "bootstrap"
        else (ratings - half_width, ratings + half_width)
    )
    rank = 1 + (low[None, :] > high[:, None]).sum(axis=1)
    battles = points + points.T
    order = np.argsort(-ratings, kind="stable")
    rows = tuple(
        LeaderboardRow(
            model=str(cells.models[i]),
            rating=float(ratings[i]),
            ci_low=float(low[i]),
            ci_high=float(high[i]),
            rank=int(rank[i]),
            n_battles=int(round(battles[i].sum())),
            bootstrap_low=float(boot_low[i]),
            bootstrap_high=float(boot_high[i]),
            sandwich_low=float(ratings[i] - half_width[i]),
            sandwich_high=float(ratings[i] + half_width[i]),
        )
        for i in order
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = points / battles
    predicted = expit(strength[:, None] - strength[None, :])
    return Leaderboard(
        rows=rows,
        win_rates=_matrix(observed, order),
        predicted_win_rates=_matrix(predicted, order),
        excluded=cells.excluded,
        interval=interval,
    )


def _gauge(models: np.ndarray, anchor: str | None) -> np.ndarray:
    """[M, M] the map from strengths to each model's reference: the mean or anchor."""
    n_models = len(models)
    if anchor is None:
        return np.full((n_models, n_models), 1.0 / n_models)
    if anchor not in models:
        raise ValueError(f"anchor {anchor!r} is not among the rated models")
    gauge = np.zeros((n_models, n_models))
    gauge[:, int(np.searchsorted(models, anchor))] = 1.0
    return gauge


def _matrix(values: np.ndarray, order: np.ndarray) -> tuple[tuple[float | None, ...]]:
    """Rows and columns in `order`, None on the diagonal and where undefined."""
    values = values[np.ix_(order, order)].copy()
    np.fill_diagonal(values, np.nan)
    return tuple(tuple(_maybe(v) for v in row) for row in values)


def _cells(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcomes: ArrayLike,
    counts: ArrayLike | None,
    min_battles: int,
) -> _Cells:
    """Battles grouped into cells, models under `min_battles` left out."""
    a_names = np.asarray(model_a)
    b_names = np.asarray(model_b)
    if np.any(a_names == b_names):
        raise ValueError("a model cannot battle itself")
    outcome = np.asarray(outcomes, dtype=np.float64)
    count = (
        np.ones(len(outcome), dtype=np.int64)
        if counts is None
        else np.asarray(counts, dtype=np.int64)
    )
    models, index = _index(np.concatenate([a_names, b_names]))
    a, b = np.split(index, 2)
    battles = np.bincount(a, count, len(models)) + np.bincount(b, count, len(models))
    kept = battles >= min_battles
    keep = kept[a] & kept[b] & (count > 0)
    # Renumber the kept models; (b, a, 1 - o) is the same battle as (a, b, o).
    renumber = np.cumsum(kept) - 1
    a, b, outcome, count = (
        renumber[a[keep]],
        renumber[b[keep]],
        outcome[keep],
        count[keep],
    )
    swap = a > b
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    outcome = np.where(swap, 1 - outcome, outcome)
    levels, level = _index(outcome)
    n_kept = int(kept.sum())
    key = (a * n_kept + b) * len(levels) + level
    if not key.size:
        raise ValueError("no battles to rate (after leaving out rare models)")
    cell_keys, cell = _index(key)
    cell_pair, cell_level = np.divmod(cell_keys, len(levels))
    return _Cells(
        models=models[kept],
        a=cell_pair // n_kept,
        b=cell_pair % n_kept,
        outcome=levels[cell_level],
        count=np.bincount(cell, count, len(cell_keys)).astype(np.int64),
        excluded=tuple(str(m) for m in models[~kept]),
    )


def _pair_points(cells: _Cells, counts: np.ndarray) -> np.ndarray:
    """Points each model took from each other, for each row of cell counts.

    Args:
        cells: the cells.
        counts: [B, K] battles in each cell, for B resamples.

    Returns:
        [B, M, M] points[b, i, j], i's wins over j plus half their ties; the battles
        between i and j are points[b, i, j] + points[b, j, i].
    """
    n_models = len(cells.models)
    n_cells = len(cells.count)
    to_pair = sparse.csr_matrix(
        (
            np.concatenate([cells.outcome, 1 - cells.outcome]),
            (
                np.concatenate(
                    [cells.a * n_models + cells.b, cells.b * n_models + cells.a]
                ),
                np.tile(np.arange(n_cells), 2),
            ),
        ),
        shape=(n_models * n_models, n_cells),
    )
    points = (to_pair @ counts.T.astype(np.float64)).T
    return points.reshape(-1, n_models, n_models)


def _check_connected(models: np.ndarray, points: np.ndarray) -> None:
    n_groups, group = connected_components(
        sparse.csr_matrix(points + points.T > 0), directed=False
    )
    if n_groups > 1:
        groups = [", ".join(models[group == g]) for g in range(n_groups)]
        raise ValueError(
            "these groups of models never met each other, so their ratings cannot be "
            "compared: " + " | ".join(groups)
        )


def _fit_strengths(points: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry maximum likelihood (with `_BT_RIDGE`) by Newton's method, many
    fits at once.

    Args:
        points: [B, M, M] points each model took from each other (see `_pair_points`).
        start: [M] strengths to start from (zero by default).

    Returns:
        [B, M] strengths in logits, averaging zero.
    """
    n_fits, n_models, _ = points.shape
    games = points + points.transpose(0, 2, 1)
    won = points.sum(axis=2)
    strength = (
        np.zeros((n_fits, n_models)) if start is None else np.tile(start, (n_fits, 1))
    )
    # The likelihood does not change when all strengths move together (only the tiny
    # ridge does); adding the all-ones matrix to the Hessian pins the step to a zero
    # sum, and keeps the solve well conditioned.
    ones = np.ones((n_models, n_models))
    for _ in range(_NEWTON_MAX_ITER):
        p = expit(strength[:, :, None] - strength[:, None, :])
        gradient = won - (games * p).sum(axis=2) - _BT_RIDGE * strength
        weight = games * p * (1 - p)
        hessian = _laplacian(weight) + _BT_RIDGE * np.eye(n_models)
        pin = hessian.trace(axis1=1, axis2=2) / n_models
        step = np.linalg.solve(hessian + pin[:, None, None] * ones, gradient[..., None])
        step = step[..., 0]
        largest = np.abs(step).max(axis=1, keepdims=True)
        strength += step * np.minimum(1.0, _MAX_STEP / np.maximum(largest, 1e-300))
        if largest.max() < _NEWTON_TOL:
            break
    return strength - strength.mean(axis=1, keepdims=True)


def _laplacian(weight: np.ndarray) -> np.ndarray:
    """[..., M, M] the sum over pairs i < j of weight_ij (e_i - e_j)(e_i - e_j)^T.

    Args:
        weight: [..., M, M] symmetric pair weights (each pair once per direction).
    """
    diagonal = np.zeros_like(weight)
    np.einsum("...ii->...i", diagonal)[:] = weight.sum(axis=-1)
    return diagonal - weight


def _sandwich_sd(
    cells: _Cells, strength: np.ndarray, relative: np.ndarray
) -> np.ndarray:
    """Robust standard errors of the strengths, in logits, in the given gauge.

    Args:
        cells: the battles.
        strength: [M] fitted strengths.
        relative: [M, M] maps strengths to what is reported (each minus the mean, or
            minus the anchor's).

    Returns:
        [M] standard errors.
    """
    n_models = len(cells.models)
    p = expit(strength[cells.a] - strength[cells.b])  # [K]

    def assemble(values: np.ndarray) -> np.ndarray:  # [K] -> [M, M] laplacian
        weight = np.zeros((n_models, n_models))
        np.add.at(weight, (cells.a, cells.b), values)
        return _laplacian(weight + weight.T)

    hessian = assemble(cells.count * p * (1 - p)) + _BT_RIDGE * np.eye(n_models)
    scores = assemble(cells.count * (cells.outcome - p) ** 2)
    # Pseudo-inverse of the Hessian: its null space is the all-equal direction.
    centre = np.full((n_models, n_models), 1.0 / n_models)
    inverse = np.linalg.inv(hessian + centre) - centre
    covariance = relative @ inverse @ scores @ inverse @ relative.T
    return np.sqrt(np.clip(np.diag(covariance), 0.0, None))


# Bootstrap fits at a time, so that the [fits, M, M] arrays stay near 16 MB.
_FIT_ELEMENTS_PER_BLOCK = 2_000_000


def _bootstrap_strengths(
    cells: _Cells, strength: np.ndarray, n_bootstrap: int, seed: int
) -> np.ndarray:
    """[n_bootstrap, M] strengths refitted on multinomial resamples of the cells."""
    total = int(cells.count.sum())
    rng = np.random.default_rng(seed)
    resampled = rng.multinomial(total, cells.count / total, size=n_bootstrap)
    block = max(1, _FIT_ELEMENTS_PER_BLOCK // len(cells.models) ** 2)
    return np.concatenate(
        [
            _fit_strengths(
                _pair_points(cells, resampled[i : i + block]), start=strength
            )
            for i in range(0, n_bootstrap, block)
        ]
    )


# --- Length-controlled win rate (AlpacaEval 2) ----------------------------------------

_LENGTH_RIDGE = 1 / 2.5**2


@dataclass(frozen=True)
class LengthControlledWinRate(_Record):
    """The raw win rate and the one predicted at equal answer lengths.

    `length_weight` is the fitted weight of tanh(length difference / its standard
    deviation), the difference being the model's length minus the baseline's:
    positive when the raters favoured longer answers.
    """

    win_rate: float
    length_controlled: float
    length_weight: float
    n_ratings: int


def length_controlled_win_rate(
    scores: ArrayLike,
    model_lengths: ArrayLike,
    baseline_lengths: ArrayLike,
    *,
    counts: ArrayLike | None = None,
) -> LengthControlledWinRate:
    """AlpacaEval 2's length-controlled win rate.

    As AlpacaEval's `metrics/glm_winrate.py` does: each rating's preference (1 a win
    of the model under test, 0.5 a tie, 0 a loss) is a soft label of a logistic
    regression on tanh(std_delta_len), the length difference divided by its standard
    deviation (ddof 1, not centred), and a per-model intercept, with no other
    intercept; the length-controlled win rate is the mean prediction at
    std_delta_len = 0, here the logistic of the intercept. That is their
    `length_controlled_minimal` formula; their default adds an instruction-difficulty
    term estimated on AlpacaEval's own prompt set and regularisation towards
    deliberately "gamed" baselines, neither of which exists for our prompts. Their fit
    is an L1-penalised regression with the penalty chosen by 5-fold cross-validation;
    this one puts a ridge on the length weight alone, `_LENGTH_RIDGE` / 2 times its
    square: a normal prior of scale 2.5 on the coefficient of a standardised input,
    Gelman et al.'s (2008) weakly informative default for logistic regression. It
    keeps the fit finite where length alone separates wins from losses (there the
    maximum-likelihood weight is infinite) and moves it by a few hundredths of a
    percentage point at 500 ratings, less with more; the intercept, and so the
    length-controlled win rate given the weight, is not penalised.

    Args:
        scores: each rating's score seen from the model under test.
        model_lengths: the length of the model's answer (characters, as AlpacaEval).
        baseline_lengths: the length of the baseline's answer.
        counts: how many ratings each row stands for, all with its score and
            lengths (default one each): a million ratings of 10,000 items are at
            most 70,000 rows of (item, score).

    Returns:
        Both win rates and the length weight.

    Raises:
        ValueError: there is no rating.
    """
    preference = outcomes_from_scores(scores)
    count = (
        np.ones(preference.size)
        if counts is None
        else np.asarray(counts, dtype=np.float64)
    )
    n_ratings = count.sum()
    if n_ratings == 0:
        raise ValueError("no ratings to compute a win rate from")
    delta = np.asarray(model_lengths, dtype=np.float64) - np.asarray(
        baseline_lengths, dtype=np.float64
    )
    raw = float((count * preference).sum() / n_ratings)
    if raw in (0.0, 1.0):  # all won or all lost: the intercept is infinite
        return LengthControlledWinRate(raw, raw, 0.0, int(n_ratings))
    spread = _std(delta, count)
    if spread > 0:
        features = np.column_stack([np.ones_like(delta), np.tanh(delta / spread)])
        ridge = np.array([0.0, _LENGTH_RIDGE])
    else:
        features = np.ones((delta.size, 1))
        ridge = np.zeros(1)
    weights = _fit_soft_logistic(features, preference, count, ridge)
    return LengthControlledWinRate(
        win_rate=raw,
        length_controlled=float(expit(weights[0])),
        length_weight=float(weights[1]) if spread > 0 else 0.0,
        n_ratings=int(n_ratings),
    )


def _std(values: np.ndarray, count: np.ndarray) -> float:
    """The standard deviation (ddof 1) of `values` each repeated `count` times."""
    n = count.sum()
    if n < 2:
        return 0.0
    mean = (count * values).sum() / n
    return math.sqrt((count * (values - mean) ** 2).sum() / (n - 1))


def _fit_soft_logistic(
    features: np.ndarray, labels: np.ndarray, count: np.ndarray, ridge: np.ndarray
) -> np.ndarray:
    """Logistic regression on labels in [0, 1] with a ridge, by Newton's method.

    Args:
        features: [N, F] the design matrix.
        labels: [N] soft labels.
        count: [N] how many times each row counts.
        ridge: [F] each weight's penalty: the log-likelihood minus ridge / 2 times
            the weight's square is maximised.

    Returns:
        [F] the weights.
    """
    weights = np.zeros(features.shape[1])
    for _ in range(_NEWTON_MAX_ITER):
        p = expit(features @ weights)
        gradient = features.T @ (count * (labels - p)) - ridge * weights
        curvature = count * p * (1 - p)
        hessian = features.T @ (features * curvature[:, None]) + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        largest = np.abs(step).max()
        weights += step * min(1.0, _MAX_STEP / max(largest, 1e-300))
        if largest < _NEWTON_TOL:
            break
    return weights


# --- Rater agreement: Krippendorff's alpha --------------------------------------------


@dataclass(frozen=True)
class Agreement(_Record):
    """Krippendorff's alpha over the items with at least two ratings.

    `alpha` is None where it is undefined (fewer than two such ratings, or all of
    them the same value).
    """

    alpha: float | None
    n_items: int
    n_ratings: int


def krippendorff_alpha(
    item_ids: ArrayLike, scores: ArrayLike, *, counts: ArrayLike | None = None
) -> Agreement:
    """Krippendorff's alpha with the ordinal metric.

    Units are the items rated at least twice, values the scores (the 7-point scale
    from model_a's side); the ordinal distance of values c <= k is
    (n_c + ... + n_k - (n_c + n_k) / 2)^2 over the values' totals n in the
    coincidence matrix (Krippendorff, "Computing Krippendorff's Alpha-Reliability").

    Args:
        item_ids: the item (comparison) of each rating.
        scores: each rating's score.
        counts: how many ratings each row stands for (default one each), as a
            GROUP BY item, score gives them.

    Returns:
        Alpha and how many items and ratings it rests on.
    """
    _, item = _index(item_ids)
    values, value = _index(np.asarray(scores, dtype=np.float64))
    by_item = _table(item, value, len(values), counts)  # [items, values]
    raters = by_item.sum(axis=1)
    by_item, raters = by_item[raters >= 2], raters[raters >= 2]
    pairing = 1.0 / (raters - 1)
    coincidence = np.einsum("uc,uk,u->ck", by_item, by_item, pairing) - np.diag(
        by_item.T @ pairing
    )
    totals = coincidence.sum(axis=0)
    n = totals.sum()
    below = np.cumsum(totals) - totals  # n_g summed over values below each value
    low, high = np.minimum.outer(below, below), np.maximum.outer(below, below)
    top = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
    distance = (high + totals[top] - low - np.add.outer(totals, totals) / 2) ** 2
    expected = (np.outer(totals, totals) * distance).sum()
    alpha = (
        1 - (n - 1) * (coincidence * distance).sum() / expected
        if n >= 2 and expected > 0
        else math.nan
    )
    return Agreement(
        alpha=_maybe(alpha), n_items=int(len(raters)), n_ratings=int(raters.sum())
    )


# --- Per-rater quality ----------------------------------------------------------------


@dataclass(frozen=True)
class RaterQuality(_Record):
    """One rater's numbers and the reasons they are flagged (empty: not flagged).

    Each rate comes with how many observations it rests on; None where there are
    none.
    """

    rater: Any
    n_ratings: int
    majority_agreement: float | None
    n_majority: int
    gold_accuracy: float | None
    n_gold: int
    swap_consistency: float | None
    n_swapped: int
    left_win_rate: float | None
    n_decisive: int
    left_p_value: float | None
    median_active_seconds: float | None
    tie_rate: float
    anomaly_p_value: float | None
    flags: tuple[str, ...]


def rater_quality(
    raters: ArrayLike,
    item_ids: ArrayLike,
    scores: ArrayLike,
    side_shown: ArrayLike,
    *,
    gold: ArrayLike | None = None,
    active_seconds: ArrayLike | None = None,
    model_a: ArrayLike | None = None,
    model_b: ArrayLike | None = None,
    min_evidence: int = 5,
    min_majority_agreement: float = 0.5,
    min_gold_accuracy: float = 0.7,
    min_swap_consistency: float = 0.5,
    position_alpha: float = 0.01,
    max_tie_rate: float = 0.5,
    min_median_seconds: float = 5.0,
    anomaly_alpha: float = 0.1,
    seed: int = 0,
) -> tuple[RaterQuality, ...]:
    """The rater table: each rater's agreement, accuracy, consistency, bias and pace.

    Per rater, over their ratings in the order given (oldest first):

    - majority agreement: how often the rating's label (model_a better, tie, model_b
      better) equals the majority label of the other raters of the same item; items
      where the others are absent or split evenly do not count;
    - gold accuracy: on gold items, how often the rater preferred the known better
      side (a tie counts as wrong);
    - swap consistency: for an item the rater rated with model_a on the left and
      again on the right (the first rating of each side), how often both ratings
      prefer the same model or both are ties;
    - P(left wins | not a tie) with the exact two-sided binomial test against 0.5;
    - median active seconds and the tie rate;
    - Chatbot Arena's anomalous-user test, see `_anomaly_p_values`.

    A rater is flagged, with the reason, where a rate with at least `min_evidence`
    observations is past its threshold, or a test's p-value is at or below its
    alpha.

    Args:
        raters: who gave each rating.
        item_ids: the item (one prompt, two answers) of each rating.
        scores: each rating's score from model_a's side.
        side_shown: "left" or "right": where model_a's answer was shown.
        gold: per rating, 1 where model_a's answer is known to be better, -1 where
            model_b's is, 0 for an item that is not gold (default: no gold items).
        active_seconds: time the rater spent on each rating.
        model_a: the model of answer a of each rating, for the anomalous-user test
            (default: one model pair for all).
        model_b: the model of answer b.
        min_evidence: fewest observations for a rate to flag a rater.
        min_majority_agreement: flag below this majority agreement.
        min_gold_accuracy: flag below this gold accuracy.
        min_swap_consistency: flag below this swap consistency.
        position_alpha: flag where the left/right binomial p-value is at most this.
        max_tie_rate: flag above this tie rate.
        min_median_seconds: flag below this median time per rating.
        anomaly_alpha: the anomalous-user test's alpha.
        seed: seeds the anomalous-user test's check points.

    Returns:
        One row per rater, in sorted order of the rater ids.
    """
    names, rater = _index(raters)
    n_raters = len(names)
    if n_raters == 0:
        return ()
    _, item = _index(item_ids)
    label = _labels(scores)
    on_left = np.asarray(side_shown) == "left"

    runs = _RaterItemRuns.of(rater, item, on_left)
    hits, has_majority = _majority_hits(item, label, runs)
    agreement, n_majority = _shares(rater[has_majority], hits[has_majority], n_raters)
    gold_side = np.zeros(label.size) if gold is None else np.asarray(gold)
    graded = gold_side != 0
    accuracy, n_gold = _shares(
        rater[graded], label[graded] == gold_side[graded], n_raters
    )
    consistency, n_swapped = _swap_consistency(rater, label, runs, n_raters)
    decisive = label != 0
    left_won = (label[decisive] > 0) == on_left[decisive]
    left_rate, n_decisive = _shares(rater[decisive], left_won, n_raters)
    left_wins = np.bincount(rater[decisive][left_won], minlength=n_raters)
    left_p = _binomial_two_sided(left_wins, n_decisive)
    tie_rate, n_ratings = _shares(rater, label == 0, n_raters)
    seconds = (
        np.full(label.size, np.nan)
        if active_seconds is None
        else np.asarray(active_seconds, dtype=np.float64)
    )
    median_seconds = np.array(
        [_nanmedian(v) for v in _split_by(rater, seconds, n_raters)]
    )
    anomaly = _anomaly_p_values(names, rater, scores, model_a, model_b, seed)

    def too_low(rate: float, n: int, minimum: float, what: str) -> tuple[bool, str]:
        return (
            n >= min_evidence and rate < minimum,
            f"{what}: {rate:.0%} of {n} (below {minimum:.0%})",
        )

    def flags(r: int) -> tuple[str, ...]:
        checks = [
            too_low(
                agreement[r],
                n_majority[r],
                min_majority_agreement,
                "agrees with the other raters' majority",
            ),
            too_low(accuracy[r], n_gold[r], min_gold_accuracy, "right on gold items"),
            too_low(
                consistency[r],
                n_swapped[r],
                min_swap_consistency,
                "consistent on swapped repeats",
            ),
            (
                left_p[r] <= position_alpha,
                f"picks the left answer in {left_rate[r]:.0%} of {n_decisive[r]} "
                f"decisive ratings (binomial p = {left_p[r]:.2g})",
            ),
            (
                n_ratings[r] >= min_evidence and tie_rate[r] > max_tie_rate,
                f"tie rate {tie_rate[r]:.0%} (above {max_tie_rate:.0%})",
            ),
            (
                n_ratings[r] >= min_evidence and median_seconds[r] < min_median_seconds,
                f"median {median_seconds[r]:.1f} s per rating "
                f"(below {min_median_seconds:g} s)",
            ),
            (
                anomaly[r] <= anomaly_alpha,
                f"votes unlike the other raters of the same models "
                f"(sequential Fisher test, p = {anomaly[r]:.2g})",
            ),
        ]
        return tuple(reason for failed, reason in checks if failed)

    return tuple(
        RaterQuality(
            rater=names[r].item(),
            n_ratings=int(n_ratings[r]),
            majority_agreement=_maybe(agreement[r]),
            n_majority=int(n_majority[r]),
            gold_accuracy=_maybe(accuracy[r]),
            n_gold=int(n_gold[r]),
            swap_consistency=_maybe(consistency[r]),
            n_swapped=int(n_swapped[r]),
            left_win_rate=_maybe(left_rate[r]),
            n_decisive=int(n_decisive[r]),
            left_p_value=_maybe(left_p[r]),
            median_active_seconds=_maybe(median_seconds[r]),
            tie_rate=float(tie_rate[r]),
            anomaly_p_value=_maybe(anomaly[r]),
            flags=flags(r),
        )
        for r in range(n_raters)
    )


@dataclass(frozen=True)
class _RaterItemRuns:
    """The ratings sorted by (rater, item, side shown), in their order within each:
    one sort for both the majority and the swapped repeats."""

    pair_run: np.ndarray  # [N] each rating's (rater, item) run, 0, 1, ...
    side_keys: np.ndarray  # [S] each (rater, item, side) run's key, ascending
    side_first: np.ndarray  # [S] the position of its first rating

    @classmethod
    def of(
        cls, rater: np.ndarray, item: np.ndarray, on_left: np.ndarray
    ) -> _RaterItemRuns:
        n_items = int(item.max()) + 1 if item.size else 0
        key = (rater * n_items + item) * 2 + on_left
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        starts_side = np.ones(key.size, dtype=bool)
        starts_side[1:] = ordered[1:] != ordered[:-1]
        starts_pair = np.ones(key.size, dtype=bool)
        starts_pair[1:] = ordered[1:] // 2 != ordered[:-1] // 2
        pair_run = np.empty(key.size, dtype=np.int64)
        pair_run[order] = np.cumsum(starts_pair) - 1
        return cls(pair_run, ordered[starts_side], order[starts_side])


def _majority_hits(
    item: np.ndarray, label: np.ndarray, runs: _RaterItemRuns
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each rating equals the majority of the item's other raters' ratings,
    and where such a majority exists (the rater's own repeats are left out)."""
    column = label + 1
    by_item = _table(item, column, 3)  # [items, labels]
    # A rating alone in its (rater, item) run leaves the item's counts less itself:
    # one of three vectors per item, decided once each.
    hits, exists = _majority(by_item[:, None, :] - np.eye(3, dtype=np.int64))
    hit, has_majority = hits[item, column, column], exists[item, column]
    repeated = np.flatnonzero(np.bincount(runs.pair_run)[runs.pair_run] > 1)
    if repeated.size:
        mine = _table(runs.pair_run, column, 3)[runs.pair_run[repeated]]
        hits, exists = _majority(by_item[item[repeated]] - mine)
        hit[repeated] = hits[np.arange(repeated.size), column[repeated]]
        has_majority[repeated] = exists
    return hit, has_majority


def _majority(others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For [..., 3] counts of each label: [..., 3] whether each label is the
    majority, and [...] whether there is one (a single most frequent label)."""
    top = others.max(axis=-1, keepdims=True)
    exists = ((others == top).sum(axis=-1) == 1) & (top[..., 0] > 0)
    return (others == top) & exists[..., None], exists


def _swap_consistency(
    rater: np.ndarray, label: np.ndarray, runs: _RaterItemRuns, n_raters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per rater: share of swapped repeats with the same label, and their count."""
    keys, first = runs.side_keys, runs.side_first  # first rating on each side
    repeat = keys[:-1] // 2 == keys[1:] // 2  # right then left of one (rater, item)
    right, left = first[:-1][repeat], first[1:][repeat]
    return _shares(rater[right], label[right] == label[left], n_raters)


def _binomial_two_sided(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Exact two-sided binomial p-values against 0.5 (NaN where no trials).

    With p = 0.5 the distribution is symmetric, so the outcomes at most as likely as
    the one observed are the two tails beyond it.
    """
    fewer = np.minimum(successes, trials - successes)
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2 * stats.binom.cdf(fewer, trials, 0.5))
    return np.where(trials > 0, p, np.nan)


def _nanmedian(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else math.nan


def _split_by(
    groups: np.ndarray, values: np.ndarray, n_groups: int
) -> list[np.ndarray]:
    """Each group's values, in their order."""
    bounds = np.cumsum(np.bincount(groups, minlength=n_groups))[:-1]
    return np.split(np.asarray(values)[_group_order(groups, n_groups)], bounds)


def _group_order(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """The entries ordered by group, in their order within each: NumPy's stable
    sort is a radix sort for 16-bit keys (a third of the time for a million)."""
    keys = groups.astype(np.uint16) if n_groups <= 1 << 16 else groups
    return np.argsort(keys, kind="stable")


# The paper checks each user at 5 of their first 100 votes.
_ANOMALY_CHECKS = 5
_ANOMALY_HORIZON = 100


def _anomaly_p_values(
    names: np.ndarray,
    rater: np.ndarray,
    scores: ArrayLike,
    model_a: ArrayLike | None,
    model_b: ArrayLike | None,
    seed: int,
) -> np.ndarray:
    """Chatbot Arena's sequential anomalous-user test (Chiang et al. 2024, 5.1).

    What is implemented, following the paper's description:

    - A vote's action is its model pair, ordered by name (m < m'); its rating H is
      the score from m''s side (the paper's H = 1: "prefers model 2").
    - For each vote of user u, with H_a the ratings of the same pair by all other
      users: p_i = (1 + #{h in H_a: h >= H_i}) / (|H_a| + 1), the paper's equation
      (10). It is one-sided: small when u rates m' higher than the others do. The
      paper's H_a is the history before the vote; here it is every other user's
      vote, earlier or later, as the dashboard recomputes from all the ratings.
    - Fisher's combination over the user's votes in order: M_j = -2 sum_{i<=j}
      log p_i.
    - Checked at 5 distinct, randomly chosen j among the first min(100, n) votes
      (all of them if fewer than 5), drawn from a generator seeded by `seed` and the
      user's id, so that a page reads the same twice: the user is anomalous at
      level alpha if M_j >= chi2_{2j} quantile 1 - alpha/5 at any check point.
      Returned as the equivalent p-value, min over the checks of 5 * P(chi2_{2j} >=
      M_j), capped at 1, so flagging at p <= alpha is the paper's rule.

    Returns:
        [R] each rater's p-value.
    """
    # Whole-number signs keep whole-number scores whole: levels are then indexed
    # by counting, not sorting.
    sign = np.ones(rater.size, dtype=np.int64)
    pair = np.zeros(rater.size, dtype=np.int64)
    if model_a is not None and model_b is not None:
        models, index = _index(
            np.concatenate([np.asarray(model_a), np.asarray(model_b)])
        )
        a, b = np.split(index, 2)
        sign = np.where(a > b, 1, -1)  # +1 where model_a is m'
        pair = np.minimum(a, b) * len(models) + np.maximum(a, b)
    _, pair = _index(pair)
    _, level = _index(sign * np.asarray(scores))
    _, by_rater = _index(rater * (int(pair.max()) + 1) + pair)
    all_at_least = _at_least(pair, level)  # [pairs, levels]
    mine_at_least = _at_least(by_rater, level)  # [rater-pairs, levels]
    # Level 0 is the lowest: at least it, every vote of the group.
    at_least = all_at_least[pair, level] - mine_at_least[by_rater, level]
    others = all_at_least[pair, 0] - mine_at_least[by_rater, 0]
    return _sequential_fisher(names, rater, (1 + at_least) / (1 + others), seed)


def _at_least(group: np.ndarray, level: np.ndarray) -> np.ndarray:
    """[groups, levels] how many entries of each group have at least each level (a
    count of each level, summed from the top: linear, where a sort of a million
    entries and two binary searches took 0.5 s)."""
    by_level = _table(group, level, int(level.max()) + 1)
    return np.cumsum(by_level[:, ::-1], axis=1)[:, ::-1]


def _check_points(n_votes: int, seed: int, rater: Any) -> np.ndarray:
    """The sorted vote counts j (1-based) at which a rater is checked."""
    rng = np.random.default_rng([seed, zlib.crc32(str(rater).encode())])
    horizon = min(n_votes, _ANOMALY_HORIZON)
    chosen = rng.choice(horizon, size=min(_ANOMALY_CHECKS, horizon), replace=False)
    return np.sort(chosen) + 1


def _sequential_fisher(
    names: np.ndarray, rater: np.ndarray, p_values: np.ndarray, seed: int
) -> np.ndarray:
    """[R] each rater's Bonferroni-adjusted p-value of Fisher's combination of their
    votes' p-values, in order, at their check points."""
    n_raters = len(names)
    order = _group_order(rater, n_raters)  # each rater's votes, in order
    n_votes = np.bincount(rater, minlength=n_raters)
    first = np.cumsum(n_votes) - n_votes
    voter = rater[order]
    rank = np.arange(rater.size) - first[voter]
    early = rank < _ANOMALY_HORIZON
    # [R, horizon] each rater's first votes' log p-values (zero past their last):
    # the cumulative sums are M_j / -2, summed in the votes' order.
    logs = np.zeros((n_raters, _ANOMALY_HORIZON))
    logs[voter[early], rank[early]] = np.log(p_values[order][early])
    combined = -2 * np.cumsum(logs, axis=1)
    checks = [
        _check_points(n, seed, name) for n, name in zip(n_votes, names, strict=True)
    ]
    checked = np.repeat(np.arange(n_raters), [c.size for c in checks])
    j = np.concatenate(checks)
    tail = stats.chi2.sf(combined[checked, j - 1], 2 * j)
    smallest = np.full(n_raters, np.inf)
    np.minimum.at(smallest, checked, tail)
    return np.minimum(1.0, _ANOMALY_CHECKS * smallest)


# --- Adaptive overlap -----------------------------------------------------------------


def needs_another_rating(
    scores: Sequence[float],
    *,
    k_min: int,
    k_max: int,
    ci_width: float,
    target_width: float,
) -> bool:
    """Whether an item should be queued for one more rater.

    Every item gets `k_min` ratings and none more than `k_max`; in between, one more
    where its raters disagree (not all the same label: win, tie or loss) or where
    the item's category is not yet measured closely enough (its win-rate interval,
    `ci_width` = ci_high - ci_low, is wider than `target_width`).

    Args:
        scores: the item's ratings so far.
        k_min: ratings every item gets.
        k_max: ratings no item gets more of.
        ci_width: current width of the category's win-rate interval.
        target_width: the width the campaign aims at.

    Returns:
        True where the item needs another rating.
    """
    if len(scores) < k_min:
        return True
    if len(scores) >= k_max:
        return False
    disagree = len(set(_labels(scores).tolist())) > 1
    return disagree or ci_width > target_width


@dataclass(frozen=True)
class OverlapSavings(_Record):
    """Ratings collected against what a fixed overlap of `k_max` would have cost."""

    n_items: int
    n_ratings: int
    fixed_ratings: int
    saved: int
    saved_share: float | None


def ratings_saved(ratings_per_item: ArrayLike, *, k_max: int) -> OverlapSavings:
    """How many ratings adaptive overlap saved against rating every item `k_max` times.

    Args:
        ratings_per_item: how many ratings each item of the campaign has.
        k_max: the fixed overlap to compare with.

    Returns:
        The counts; `saved` counts only ratings below `k_max` per item.
    """
    counts = np.asarray(ratings_per_item, dtype=np.int64)
    fixed = int(counts.size * k_max)
    saved = int((k_max - np.minimum(counts, k_max)).sum())
    return OverlapSavings(
        n_items=int(counts.size),
        n_ratings=int(counts.sum()),
        fixed_ratings=fixed,
        saved=saved,
        saved_share=saved / fixed if fixed else None,
    )
