"""The dashboards' statistics, each checked against an independent reference.

References: plain-Python bootstraps, direct SciPy maximum-likelihood fits on the raw
battles, the `krippendorff` package, `scipy.stats.binomtest`, loops over the paper's
formulas, and the Gemma report's Table 5.
"""

import json
import math
import random

import krippendorff
import numpy as np
import pytest
from scipy import optimize, stats

from webapp.evals.stats import (
    bradley_terry,
    krippendorff_alpha,
    length_controlled_win_rate,
    needs_another_rating,
    outcomes_from_scores,
    rater_quality,
    ratings_saved,
    win_rate,
    win_rate_from_counts,
    win_rates_by,
)

ELO = 400 / math.log(10)


# --- Table 5 ------------------------------------------------------------------------


def clustered_ratings(n_prompts: int, seed: int) -> tuple[list[int], list[int]]:
    """Prompts with 1-6 ratings each that lean together, as real prompts do."""
    rng = random.Random(seed)
    prompts, scores = [], []
    for prompt in range(n_prompts):
        leaning = rng.gauss(0.5, 1.5)
        for _ in range(rng.randint(1, 6)):
            prompts.append(prompt)
            scores.append(max(-3, min(3, round(leaning + rng.gauss(0, 1)))))
    return prompts, scores


def percentile(values: list[float], q: float) -> float:
    """The linear-interpolation percentile (Hyndman and Fan's type 7), by hand."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def plain_bootstrap(prompts, scores, draws) -> list[float]:
    """Win rate of each resample, with loops: `draws[b]` lists resample b's prompts."""
    by_prompt: dict[int, list[int]] = {}
    for prompt, score in zip(prompts, scores, strict=True):
        by_prompt.setdefault(prompt, []).append(score)
    ordered = [by_prompt[p] for p in sorted(by_prompt)]
    rates = []
    for drawn in draws:
        points = ratings = 0.0
        for index in drawn:
            for score in ordered[index]:
                points += 1.0 if score > 0 else 0.5 if score == 0 else 0.0
                ratings += 1
        rates.append(points / ratings)
    return rates


def test_win_rate_splits_ties_evenly_and_gives_the_shares():
    found = win_rate([1, 1, 2, 3, 3], [3, 0, -1, 2, 0], n_resamples=1000)

    assert found.win_rate == pytest.approx((2 + 2 / 2) / 5)
    assert (found.wins, found.ties, found.losses) == pytest.approx((0.4, 0.4, 0.2))
    assert (found.n_ratings, found.n_prompts) == (5, 3)
    assert found.ci_low <= found.win_rate <= found.ci_high


def test_the_interval_is_a_plain_bootstrap_of_prompts_with_the_same_draws():
    prompts, scores = clustered_ratings(60, seed=1)
    n_prompts = len(set(prompts))
    draws = np.random.default_rng(7).integers(
        0, n_prompts, size=(1000, n_prompts), dtype=np.int32
    )

    rates = plain_bootstrap(prompts, scores, draws.tolist())
    found = win_rate(prompts, scores, n_resamples=1000, seed=7)

    assert found.ci_low == pytest.approx(percentile(rates, 0.025), abs=1e-12)
    assert found.ci_high == pytest.approx(percentile(rates, 0.975), abs=1e-12)


def test_resamples_drawn_in_blocks_are_those_of_one_draw():
    # 1,500 prompts: the resamples are drawn in blocks of a few hundred.
    rng = np.random.default_rng(8)
    wins, ties, losses = rng.integers(0, 4, size=(3, 1500))
    wins += 1  # every prompt rated
    draws = np.random.default_rng(9).integers(
        0, 1500, size=(1000, 1500), dtype=np.int32
    )
    points, ratings = wins + ties / 2, wins + ties + losses
    rates = points[draws].sum(axis=1) / ratings[draws].sum(axis=1)

    found = win_rate_from_counts(wins, ties, losses, n_resamples=1000, seed=9)

    assert found.ci_low == pytest.approx(np.quantile(rates, 0.025), abs=1e-12)
    assert found.ci_high == pytest.approx(np.quantile(rates, 0.975), abs=1e-12)


def test_the_interval_agrees_with_a_bootstrap_drawn_by_pythons_random():
    prompts, scores = clustered_ratings(200, seed=2)
    n_prompts = len(set(prompts))
    rng = random.Random(3)
    draws = [[rng.randrange(n_prompts) for _ in range(n_prompts)] for _ in range(2000)]

    rates = plain_bootstrap(prompts, scores, draws)
    found = win_rate(prompts, scores)

    # Two independent sets of 2,000 draws: their 2.5% quantiles differ by ~0.002.
    assert found.ci_low == pytest.approx(percentile(rates, 0.025), abs=0.01)
    assert found.ci_high == pytest.approx(percentile(rates, 0.975), abs=0.01)
    assert found.ci_high - found.ci_low > 0.05


def test_counts_per_prompt_give_the_same_table_as_ratings():
    prompts, scores = clustered_ratings(50, seed=4)
    per_prompt = {p: [0, 0, 0] for p in set(prompts)}
    for prompt, score in zip(prompts, scores, strict=True):
        per_prompt[prompt][0 if score > 0 else 1 if score == 0 else 2] += 1
    wins, ties, losses = zip(*(per_prompt[p] for p in sorted(per_prompt)), strict=True)

    assert win_rate_from_counts(wins, ties, losses) == win_rate(prompts, scores)


def test_win_rates_by_group_are_each_groups_own():
    prompts, scores = clustered_ratings(40, seed=5)
    sides = ["left" if i % 3 else "right" for i in range(len(prompts))]

    by_side = win_rates_by(sides, prompts, scores, n_resamples=1000)

    assert list(by_side) == ["left", "right"]
    for side, found in by_side.items():
        mine = [i for i, s in enumerate(sides) if s == side]
        assert found == win_rate(
            [prompts[i] for i in mine], [scores[i] for i in mine], n_resamples=1000
        )


# Gemma report (2024), Table 5: W / T / L shares against Mistral 7B v0.2 Instruct and
# the printed win rates.
TABLE_5 = {
    ("Gemma 7B IT", "Safety"): ((42.9, 30.2, 26.9), 58.0),
    ("Gemma 7B IT", "Instruction Following"): ((42.5, 18.4, 39.1), 51.7),
    # 44.8 + 22.9 / 2 = 56.25, but the report prints 56.5: the cell does not add up in
    # the paper itself. The arithmetic is asserted.
    ("Gemma 2B IT", "Safety"): ((44.8, 22.9, 32.3), 56.25),
    ("Gemma 2B IT", "Instruction Following"): ((32.7, 17.8, 49.5), 41.6),
}


@pytest.mark.parametrize("cell", TABLE_5, ids=" / ".join)
def test_table_5_of_the_gemma_report_comes_out_as_printed(cell):
    (wins, ties, losses), printed = TABLE_5[cell]
    # 1,000 ratings (tenths of a percent) spread over 400 prompts.
    scores = [2] * round(wins * 10) + [0] * round(ties * 10) + [-1] * round(losses * 10)
    prompts = [i % 400 for i in range(len(scores))]

    found = win_rate(prompts, scores)

    assert found.n_ratings == 1000
    assert 100 * found.win_rate == pytest.approx(printed)
    assert [100 * s for s in (found.wins, found.ties, found.losses)] == pytest.approx(
        [wins, ties, losses]
    )
    assert found.ci_low < found.win_rate < found.ci_high


# --- Bradley-Terry --------------------------------------------------------------------


def random_battles(n_battles: int, seed: int, n_models: int = 5):
    """Battles with ties among models of spread-out strength."""
    rng = np.random.default_rng(seed)
    strength = np.linspace(-1.2, 1.2, n_models)
    a = rng.integers(0, n_models, n_battles)
    b = (a + rng.integers(1, n_models, n_battles)) % n_models
    p_win = 1 / (1 + np.exp(strength[b] - strength[a]))
    draw = rng.random(n_battles)
    outcome = np.where(draw < 0.2, 0.5, np.where(draw < 0.2 + 0.8 * p_win, 1.0, 0.0))
    names = np.array([f"m{i}" for i in range(n_models)])
    return names[a], names[b], outcome


def direct_fit(a_names, b_names, outcome) -> dict[str, float]:
    """Maximum likelihood by scipy.optimize on every battle, ratings averaging 1000."""
    models = sorted(set(a_names) | set(b_names))
    a = np.array([models.index(m) for m in a_names])
    b = np.array([models.index(m) for m in b_names])

    def negative_log_likelihood(theta):
        d = theta[a] - theta[b]
        return -np.sum(outcome * d - np.logaddexp(0, d))

    fit = optimize.minimize(
        negative_log_likelihood, np.zeros(len(models)), method="BFGS", tol=1e-12
    )
    theta = fit.x - fit.x.mean()
    return {m: 1000 + ELO * t for m, t in zip(models, theta, strict=True)}


def ratings_of(board) -> dict[str, float]:
    return {row.model: row.rating for row in board.rows}


def test_bradley_terry_is_the_maximum_likelihood_fit():
    a, b, outcome = random_battles(600, seed=1)

    board = bradley_terry(a, b, outcome, n_bootstrap=100)

    assert ratings_of(board) == pytest.approx(direct_fit(a, b, outcome), abs=1e-3)
    assert [row.rating for row in board.rows] == sorted(ratings_of(board).values())[
        ::-1
    ]
    assert sum(row.n_battles for row in board.rows) == 2 * 600


def test_grouped_battles_with_counts_fit_the_same():
    a, b, outcome = random_battles(400, seed=2)
    cells: dict[tuple, int] = {}
    for cell in zip(a, b, outcome, strict=True):
        cells[cell] = cells.get(cell, 0) + 1
    ca, cb, co = zip(*cells, strict=True)

    grouped = bradley_terry(ca, cb, co, counts=list(cells.values()), seed=3)

    assert grouped == bradley_terry(a, b, outcome, seed=3)


def test_the_sandwich_interval_is_the_robust_covariance_of_the_battles():
    a_names, b_names, outcome = random_battles(500, seed=3)
    board = bradley_terry(a_names, b_names, outcome, interval="sandwich")
    models = sorted(set(a_names))
    rating = ratings_of(board)
    theta = np.array([(rating[m] - 1000) / ELO for m in models])
    # Per battle: score (o - p) x and information p (1 - p) x x^T, x = e_a - e_b.
    x = np.zeros((len(outcome), len(models)))
    x[np.arange(len(outcome)), [models.index(m) for m in a_names]] = 1
    x[np.arange(len(outcome)), [models.index(m) for m in b_names]] = -1
    p = 1 / (1 + np.exp(-x @ theta))
    bread = np.linalg.pinv((x * (p * (1 - p))[:, None]).T @ x)
    meat = (x * ((outcome - p) ** 2)[:, None]).T @ x
    half = stats.norm.ppf(0.975) * ELO * np.sqrt(np.diag(bread @ meat @ bread))

    for row in board.rows:
        i = models.index(row.model)
        assert (row.ci_low, row.ci_high) == (row.sandwich_low, row.sandwich_high)
        assert row.sandwich_low == pytest.approx(row.rating - half[i], abs=1e-6)
        assert row.sandwich_high == pytest.approx(row.rating + half[i], abs=1e-6)


def test_the_bootstrap_interval_agrees_with_refitting_battles_drawn_by_random():
    a, b, outcome = random_battles(300, seed=4, n_models=3)
    rng = random.Random(5)
    refits = []
    for _ in range(300):
        drawn = [rng.randrange(len(outcome)) for _ in outcome]
        refits.append(direct_fit(a[drawn], b[drawn], outcome[drawn]))

    board = bradley_terry(a, b, outcome, n_bootstrap=300)

    # Two independent sets of 300 resamples: their 2.5% quantiles differ by about a
    # twentieth of the interval's width.
    for row in board.rows:
        values = [refit[row.model] for refit in refits]
        width = percentile(values, 0.975) - percentile(values, 0.025)
        assert (row.ci_low, row.ci_high) == (row.bootstrap_low, row.bootstrap_high)
        assert row.bootstrap_low == pytest.approx(
            percentile(values, 0.025), abs=0.2 * width
        )
        assert row.bootstrap_high == pytest.approx(
            percentile(values, 0.975), abs=0.2 * width
        )


def test_an_anchor_keeps_its_rating_and_the_differences():
    a, b, outcome = random_battles(300, seed=5)

    mean = ratings_of(bradley_terry(a, b, outcome, n_bootstrap=100))
    anchored = bradley_terry(
        a, b, outcome, anchor="m2", base_rating=1200, n_bootstrap=100
    )

    assert ratings_of(anchored) == pytest.approx(
        {m: r - mean["m2"] + 1200 for m, r in mean.items()}
    )
    row = next(row for row in anchored.rows if row.model == "m2")
    assert row.ci_low == row.ci_high == row.sandwich_low == 1200


def test_rank_bands_count_the_models_surely_better():
    # m0 loses mostly to m1 and m2, which are hard to tell apart; m3 beats them all.
    pairs = (
        [("m3", "m0", 1.0)] * 60 + [("m3", "m1", 1.0)] * 55 + [("m1", "m3", 1.0)] * 5
    )
    pairs += [("m3", "m2", 1.0)] * 55 + [("m2", "m3", 1.0)] * 5
    pairs += [("m1", "m2", 1.0)] * 31 + [("m2", "m1", 1.0)] * 29
    pairs += [("m1", "m0", 1.0)] * 50 + [("m0", "m1", 1.0)] * 10
    pairs += [("m2", "m0", 1.0)] * 50 + [("m0", "m2", 1.0)] * 10
    a, b, outcome = zip(*pairs, strict=True)

    board = bradley_terry(a, b, outcome, n_bootstrap=200)

    assert [(row.model, row.rank) for row in board.rows] == [
        ("m3", 1),
        ("m1", 2),
        ("m2", 2),
        ("m0", 4),
    ]
    for row in board.rows:
        assert row.rank == 1 + sum(o.ci_low > row.ci_high for o in board.rows)


def test_the_win_rate_matrices_are_observed_and_predicted():
    a, b, outcome = random_battles(400, seed=6, n_models=3)
    board = bradley_terry(a, b, outcome, n_bootstrap=100)
    order = [row.model for row in board.rows]

    for i, row in enumerate(board.rows):
        for j, other in enumerate(order):
            if i == j:
                assert board.win_rates[i][j] is None
                continue
            mine = [
                o
                for x, y, o in zip(a, b, outcome, strict=True)
                if (x, y) == (row.model, other)
            ]
            theirs = [
                o
                for x, y, o in zip(a, b, outcome, strict=True)
                if (x, y) == (other, row.model)
            ]
            observed = (sum(mine) + sum(1 - o for o in theirs)) / (
                len(mine) + len(theirs)
            )
            gap = board.rows[j].rating - row.rating
            assert board.win_rates[i][j] == pytest.approx(observed)
            assert board.predicted_win_rates[i][j] == pytest.approx(
                1 / (1 + 10 ** (gap / 400))
            )


def test_models_under_the_minimum_are_left_out_with_their_battles():
    a, b, outcome = random_battles(300, seed=7, n_models=3)
    with_rare = bradley_terry(
        [*a, *["rare"] * 4], [*b, *["m0"] * 4], [*outcome, *[1.0] * 4], min_battles=5
    )

    assert with_rare.excluded == ("rare",)
    assert with_rare.rows == bradley_terry(a, b, outcome).rows


def test_a_one_sided_bootstrap_resample_still_gives_a_leaderboard():
    # 3 wins, 1 tie and 1 loss: one resample in thirteen holds only a's wins, where
    # the likelihood has no maximum. The ratings are the maximum-likelihood ones.
    board = bradley_terry(["a"] * 3, ["b"] * 3, [1, 0.5, 0], counts=[3, 1, 1])

    a, b = board.rows
    assert (a.model, b.model) == ("a", "b")
    assert a.rating == pytest.approx(1000 + 200 * math.log10(3.5 / 1.5), abs=1e-3)
    assert a.rating + b.rating == pytest.approx(2000)
    # Those resamples put a far above b, and the interval says so.
    assert a.bootstrap_high > a.rating + 500
    assert all(math.isfinite(v) for row in board.rows for v in row.to_dict().values()
               if isinstance(v, float))  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        # A model with one battle, a tie: absent from a third of the resamples.
        [("rare", "m0", 0.5)],
        # A model that never lost: its likelihood rises without bound.
        [("champ", "m0", 1.0), ("champ", "m1", 1.0)],
    ],
    ids=["absent-from-resamples", "never-lost"],
)
def test_sparse_models_get_finite_ratings_and_leave_the_others_as_they_were(extra):
    a, b, outcome = random_battles(300, seed=14, n_models=3)
    extra_a, extra_b, extra_outcome = zip(*extra, strict=True)

    board = bradley_terry(
        [*a, *extra_a], [*b, *extra_b], [*outcome, *extra_outcome], n_bootstrap=200
    )

    found = ratings_of(board)
    assert all(
        math.isfinite(v)
        for row in board.rows
        for v in (row.rating, row.ci_low, row.ci_high, row.sandwich_low)
    )
    # The others' differences are the fit without the sparse model.
    alone = ratings_of(bradley_terry(a, b, outcome))
    assert found["m1"] - found["m0"] == pytest.approx(alone["m1"] - alone["m0"])
    assert found["m2"] - found["m0"] == pytest.approx(alone["m2"] - alone["m0"])


def test_models_that_never_met_cannot_be_ranked_together():
    with pytest.raises(ValueError, match="never met"):
        bradley_terry(["a", "c"], ["b", "d"], [1.0, 0.0])


def test_the_leaderboard_prints_as_strict_json():
    a, b, outcome = random_battles(100, seed=8, n_models=3)

    printed = json.loads(
        json.dumps(bradley_terry(a, b, outcome).to_dict(), allow_nan=False)
    )

    assert set(printed["rows"][0]) >= {
        "model",
        "rating",
        "ci_low",
        "ci_high",
        "rank",
        "n_battles",
    }


def test_scores_become_outcomes():
    assert outcomes_from_scores([3, 1, 0, -2]).tolist() == [1.0, 1.0, 0.5, 0.0]


# --- Length-controlled win rate -----------------------------------------------------


# The ridge on the length weight: a normal prior of scale 2.5 (Gelman et al. 2008).
LENGTH_RIDGE = 1 / 2.5**2


def glm_reference(scores, model_len, baseline_len) -> tuple[float, float]:
    """The length-controlled win rate and length weight: the soft-label log-loss plus
    the ridge on the length weight, minimised by SciPy."""
    y = outcomes_from_scores(scores)
    delta = np.asarray(model_len, dtype=float) - np.asarray(baseline_len, dtype=float)
    features = np.column_stack(
        [np.ones(len(y)), np.tanh(delta / np.std(delta, ddof=1))]
    )

    def loss(w):
        z = features @ w
        return np.sum(np.logaddexp(0, z) - y * z) + LENGTH_RIDGE / 2 * w[1] ** 2

    w = optimize.minimize(loss, np.zeros(2), method="BFGS", tol=1e-12).x
    return 1 / (1 + math.exp(-w[0])), w[1]


def test_the_length_controlled_win_rate_is_the_glm_at_equal_length():
    rng = np.random.default_rng(9)
    model_len = rng.integers(200, 2000, 500)
    baseline_len = rng.integers(200, 1500, 500)
    longer = np.tanh((model_len - baseline_len) / 600)
    scores = np.where(
        rng.random(500) < 0.5 + 0.3 * longer, 2, np.where(rng.random(500) < 0.3, 0, -2)
    )
    controlled, weight = glm_reference(scores, model_len, baseline_len)

    found = length_controlled_win_rate(scores, model_len, baseline_len)

    assert found.win_rate == pytest.approx(outcomes_from_scores(scores).mean())
    assert found.length_controlled == pytest.approx(controlled, abs=1e-8)
    assert found.length_weight == pytest.approx(weight, abs=1e-6)
    assert found.length_weight > 0


def test_length_alone_separating_wins_from_losses_still_gives_a_win_rate():
    # Longer answers won, shorter ones lost: without the ridge the length weight
    # would grow without bound.
    scores, model_len, baseline_len = [2, 2, -2, -2, 0], [10, 12, 3, 4, 7], [5] * 5
    controlled, weight = glm_reference(scores, model_len, baseline_len)

    found = length_controlled_win_rate(scores, model_len, baseline_len)

    assert found.win_rate == 0.5
    assert found.length_controlled == pytest.approx(controlled, abs=1e-8)
    assert found.length_weight == pytest.approx(weight, abs=1e-6)
    # At equal length the model, which tied when 2 characters longer, loses more.
    assert 0.1 < found.length_controlled < 0.5


def grouped(*columns) -> tuple[list[tuple], list[int]]:
    """The distinct rows of the columns, and how many times each occurs."""
    rows: dict[tuple, int] = {}
    for row in zip(*columns, strict=True):
        rows[row] = rows.get(row, 0) + 1
    return list(rows), list(rows.values())


def test_grouped_ratings_with_counts_control_length_the_same():
    rng = np.random.default_rng(15)
    item = rng.integers(0, 40, 2000)
    model_len, baseline_len = rng.integers(100, 900, size=(2, 40))
    scores = np.clip(
        rng.integers(-3, 4, 2000) + (model_len > baseline_len)[item], -3, 3
    )
    rows, counts = grouped(item.tolist(), scores.tolist())
    items, row_scores = np.array(rows).T

    expected = length_controlled_win_rate(scores, model_len[item], baseline_len[item])
    found = length_controlled_win_rate(
        row_scores, model_len[items], baseline_len[items], counts=counts
    )

    assert len(rows) < 300
    assert found.n_ratings == expected.n_ratings == 2000
    assert found.win_rate == expected.win_rate
    assert found.length_controlled == pytest.approx(expected.length_controlled, 1e-12)
    assert found.length_weight == pytest.approx(expected.length_weight, 1e-12)


def test_a_preference_for_length_alone_is_controlled_away():
    rng = np.random.default_rng(10)
    model_len = rng.normal(1500, 400, 4000)
    baseline_len = rng.normal(1000, 400, 4000)
    delta = model_len - baseline_len
    # Even odds at equal length, and longer answers win, as the GLM has it.
    p_win = 1 / (1 + np.exp(-3 * np.tanh(delta / np.std(delta, ddof=1))))
    scores = np.where(rng.random(4000) < p_win, 1, -1)

    found = length_controlled_win_rate(scores, model_len, baseline_len)

    assert found.win_rate > 0.7
    assert found.length_controlled == pytest.approx(0.5, abs=0.05)


# --- Krippendorff's alpha -----------------------------------------------------------


def test_alpha_equals_the_krippendorff_package():
    rng = np.random.default_rng(11)
    truth = rng.integers(-3, 4, 80)
    table = np.full((8, 80), np.nan)  # raters x items, NaN: not rated
    items, scores = [], []
    for item in range(80):
        for rater in rng.choice(8, size=rng.integers(1, 5), replace=False):
            score = int(np.clip(truth[item] + rng.integers(-1, 2), -3, 3))
            table[rater, item] = score
            items.append(f"item-{item}")
            scores.append(score)

    found = krippendorff_alpha(items, scores)

    expected = krippendorff.alpha(
        reliability_data=table, level_of_measurement="ordinal"
    )
    assert found.alpha == pytest.approx(expected, abs=1e-12)
    assert found.n_items == int((np.sum(~np.isnan(table), axis=0) >= 2).sum())


def test_alpha_from_counts_of_each_score_is_the_same():
    rng = np.random.default_rng(16)
    item = rng.integers(0, 30, 400)
    scores = np.clip(item % 7 - 3 + rng.integers(-1, 2, 400), -3, 3)
    rows, counts = grouped(item.tolist(), scores.tolist())
    items, row_scores = zip(*rows, strict=True)

    found = krippendorff_alpha(items, row_scores, counts=counts)

    expected = krippendorff_alpha(item, scores)
    assert found.alpha == pytest.approx(expected.alpha, abs=1e-12)
    assert (found.n_items, found.n_ratings) == (expected.n_items, expected.n_ratings)


def test_alpha_is_none_without_pairable_disagreement():
    assert krippendorff_alpha([1, 2], [3, -3]).alpha is None
    assert krippendorff_alpha([1, 1, 2, 2], [2, 2, 2, 2]).alpha is None


# --- Per-rater quality --------------------------------------------------------------


def test_each_raters_rates_are_counted_as_described():
    # Items 1 and 2 are rated by ann, bob and cy; ann rates item 3 on both sides.
    rows = [
        # rater, item, score (model_a's side), side of model_a, gold, seconds
        ("ann", 1, 2, "left", 1, 10),
        ("bob", 1, 1, "right", 1, 20),
        ("cy", 1, -1, "left", 1, 30),
        ("ann", 2, 0, "right", 0, 40),
        ("bob", 2, -2, "left", 0, 50),
        ("cy", 2, -3, "right", 0, 60),
        ("ann", 3, 1, "left", 0, 70),
        ("ann", 3, -1, "right", 0, 80),
        ("bob", 4, 3, "left", -1, 2),
        ("cy", 5, 0, "left", 1, 30),
    ]
    raters, items, scores, sides, gold, seconds = zip(*rows, strict=True)

    found = {
        row.rater: row
        for row in rater_quality(
            raters, items, scores, sides, gold=gold, active_seconds=seconds
        )
    }

    ann, bob, cy = found["ann"], found["bob"], found["cy"]
    # Item 1: the others of ann (bob 1, cy -1) split evenly -> not counted; of bob
    # (ann 1, cy -1) too; of cy (ann 1, bob 1) the majority is 1. Item 2: of ann
    # (-1, -1) -> -1; of bob (0, -1) split; of cy (0, -1) split.
    assert (ann.majority_agreement, ann.n_majority) == (0.0, 1)
    assert (bob.majority_agreement, bob.n_majority) == (None, 0)
    assert (cy.majority_agreement, cy.n_majority) == (0.0, 1)
    assert (ann.gold_accuracy, ann.n_gold) == (1.0, 1)
    assert (bob.gold_accuracy, bob.n_gold) == (0.5, 2)
    assert (cy.gold_accuracy, cy.n_gold) == (0.0, 2)  # a tie on a gold item is wrong
    assert (ann.swap_consistency, ann.n_swapped) == (0.0, 1)
    assert bob.n_swapped == 0
    # Left wins: ann's decisive ratings 2/left, 1/left, -1/right (b on the left won).
    assert (ann.left_win_rate, ann.n_decisive) == (1.0, 3)
    assert (bob.left_win_rate, bob.n_decisive) == (pytest.approx(1 / 3), 3)
    assert ann.tie_rate == 0.25
    assert ann.median_active_seconds == 55
    assert bob.median_active_seconds == 20


def test_the_position_bias_p_value_is_scipys_binomial_test():
    raters, items, scores, sides = [], [], [], []
    for rater, (left_wins, right_wins) in enumerate(
        [(9, 1), (18, 2), (6, 6), (3, 10), (0, 7)]
    ):
        for i in range(left_wins + right_wins):
            raters.append(rater)
            items.append(1000 * rater + i)
            scores.append(2)  # model_a preferred...
            sides.append("left" if i < left_wins else "right")  # ...shown there

    for row in rater_quality(raters, items, scores, sides):
        left = round(row.left_win_rate * row.n_decisive)
        expected = stats.binomtest(left, row.n_decisive, 0.5).pvalue
        assert row.left_p_value == pytest.approx(expected, rel=1e-9)
        assert any("left" in flag for flag in row.flags) == (expected <= 0.01)


def paper_p_values(raters, pairs, ratings) -> dict:
    """Equation (10) of Chiang et al. (2024) with loops, votes in order per rater."""
    found: dict = {}
    for rater, pair, rating in zip(raters, pairs, ratings, strict=True):
        others = [
            h
            for r, a, h in zip(raters, pairs, ratings, strict=True)
            if a == pair and r != rater
        ]
        p = (1 + sum(h >= rating for h in others)) / (len(others) + 1)
        found.setdefault(rater, []).append(p)
    return found


def test_the_anomalous_user_test_is_fishers_combination_of_the_papers_p_values():
    rng = random.Random(12)
    raters, model_a, model_b, scores = [], [], [], []
    for rater in [f"r{i}" for i in range(12)]:
        for _ in range(rng.randint(1, 5)):  # up to 5 votes: every vote is checked
            a, b = rng.sample(["x", "y", "z"], 2)
            raters.append(rater)
            model_a.append(a)
            model_b.append(b)
            scores.append(rng.randint(-3, 3))
    # The paper's rating H: from the side of the pair's later model name.
    pairs = [tuple(sorted(p)) for p in zip(model_a, model_b, strict=True)]
    ratings = [
        s if a > b else -s for a, b, s in zip(model_a, model_b, scores, strict=True)
    ]

    found = rater_quality(
        raters,
        range(len(raters)),
        scores,
        ["left"] * len(raters),
        model_a=model_a,
        model_b=model_b,
    )

    for row in found:
        p = paper_p_values(raters, pairs, ratings)[row.rater]
        fisher = [-2 * sum(math.log(x) for x in p[:j]) for j in range(1, len(p) + 1)]
        tails = [stats.chi2.sf(m, 2 * j) for j, m in enumerate(fisher, start=1)]
        assert row.anomaly_p_value == pytest.approx(min(1.0, 5 * min(tails)), rel=1e-9)


def test_a_rater_always_favouring_one_model_is_flagged_as_anomalous():
    rng = random.Random(13)
    raters, scores = [], []
    for rater in range(20):
        for _ in range(40):
            raters.append(rater)
            scores.append(3 if rater == 0 else rng.randint(-3, 3))

    found = rater_quality(raters, range(len(raters)), scores, ["left"] * len(raters))

    flagged = [row.rater for row in found if any("unlike" in f for f in row.flags)]
    assert flagged == [0]


def test_rates_past_their_thresholds_flag_the_rater_with_the_reason():
    n = 10
    raters = ["hasty"] * n + ["fine"] * n
    scores = [0] * 8 + [1, -1] + [1] * n
    sides = ["left", "right"] * n
    seconds = [2] * n + [30] * n

    found = {
        row.rater: row
        for row in rater_quality(
            raters, range(2 * n), scores, sides, active_seconds=seconds
        )
    }

    assert found["fine"].flags == ()
    assert len(found["hasty"].flags) == 2
    assert "tie rate 80%" in found["hasty"].flags[0]
    assert "median 2.0 s" in found["hasty"].flags[1]
    json.dumps([row.to_dict() for row in found.values()], allow_nan=False)


# --- Adaptive overlap ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "ci_width", "expected"),
    [
        ([2], 0.01, True),  # below k_min
        ([2, 1], 0.01, False),  # agree, category measured closely enough
        ([2, -1], 0.01, True),  # disagree
        ([2, 0], 0.01, True),  # a tie is not a win
        ([2, 1], 0.2, True),  # the category's interval is still too wide
        ([2, -1, 1, 0], 0.2, False),  # k_max reached
    ],
)
def test_an_item_gets_another_rating_only_where_needed(scores, ci_width, expected):
    assert (
        needs_another_rating(
            scores, k_min=2, k_max=4, ci_width=ci_width, target_width=0.1
        )
        is expected
    )


def test_ratings_saved_against_a_fixed_overlap():
    saved = ratings_saved([2, 2, 3, 5, 6], k_max=5)  # 6: a rating past k_max

    assert saved.to_dict() == {
        "n_items": 5,
        "n_ratings": 18,
        "fixed_ratings": 25,
        "saved": 8,
        "saved_share": 8 / 25,
    }
