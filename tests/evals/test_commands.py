"""The dashboards' commands print exactly the JSON people script against, with the
numbers of a small study worked out by hand (`studies.WORKED`)."""

import io
import json
import math

import krippendorff
import numpy as np
import pytest
from django.core.management import CommandError, call_command

from tests.evals.studies import (
    BASELINE,
    MODEL,
    WORKED,
    battles,
    chat_votes,
    import_study,
)

pytestmark = pytest.mark.django_db

WIN_RATE_KEYS = {
    "model", "baseline", "category", "win_rate", "ci_low", "ci_high", "wins", "ties",
    "losses", "n_ratings", "n_prompts",
}  # fmt: skip


def rounded(rows: list[tuple]) -> list[tuple]:
    return [tuple(round(v, 12) if isinstance(v, float) else v for v in r) for r in rows]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_win_rates_json_is_table_5_worked_by_hand():
    import_study("worked")

    rows = json.loads(run("win_rates", "--campaign", "worked", "--json"))

    assert all(set(row) == WIN_RATE_KEYS for row in rows)
    # Pairs in order of names, each with "all" first.
    expected = [
        ("m-other", "all", 0.5, 0.5, 0.5, 0.0, 1.0, 0.0, 1, 1),
        ("m-other", "coding", 0.5, 0.5, 0.5, 0.0, 1.0, 0.0, 1, 1),
        (MODEL, "all", 0.5, 0.0, 0.7, 3 / 7, 1 / 7, 3 / 7, 7, 2),
        (MODEL, "coding", 0.7, 0.7, 0.7, 0.6, 0.2, 0.2, 5, 1),
        (MODEL, "writing", 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2, 1),
    ]
    got = [
        (r["model"], r["category"], r["win_rate"], r["ci_low"], r["ci_high"],
         r["wins"], r["ties"], r["losses"], r["n_ratings"], r["n_prompts"])
        for r in rows
    ]  # fmt: skip
    assert rounded(got) == rounded(expected)
    assert {row["baseline"] for row in rows} == {BASELINE}


def test_in_an_imported_campaign_model_is_the_files_model_a():
    import_study("swapped", [("p1", "coding", BASELINE, MODEL, 3, "r1", "a")])

    (all_row, _coding) = json.loads(run("win_rates", "--campaign", "swapped", "--json"))

    assert (all_row["model"], all_row["baseline"], all_row["win_rate"]) == (
        BASELINE,
        MODEL,
        1.0,
    )


def test_leaderboard_json_has_the_elo_ratings_of_a_worked_case():
    # m-test against m-base only, 12 wins, 4 ties and 4 losses: 14 points of 20, so
    # the fitted odds are 0.7 / 0.3 and the ratings 1000 +- 200 log10(7 / 3) around
    # their mean of 1000.
    scores = [3] * 12 + [0] * 4 + [-1] * 4
    import_study(
        "pair",
        [
            ("p1", "coding", MODEL, BASELINE, s, f"r{i}", "a")
            for i, s in enumerate(scores)
        ],
    )

    rows = json.loads(run("leaderboard", "--campaign", "pair", "--json"))

    assert [set(row) for row in rows] == [
        {"model", "rating", "ci_low", "ci_high", "rank", "n_battles"}
    ] * 2
    half_gap = 200 * math.log10(7 / 3)
    assert [r["model"] for r in rows] == [MODEL, BASELINE]
    assert [r["rating"] for r in rows] == pytest.approx(
        [1000 + half_gap, 1000 - half_gap]
    )
    assert [r["n_battles"] for r in rows] == [20, 20]
    assert all(r["ci_low"] <= r["rating"] <= r["ci_high"] for r in rows)


def test_the_leaderboard_anchors_a_baseline_and_counts_chat_votes_in_all_models(
    rater,
):
    import_study(
        "arena",
        battles(MODEL, BASELINE, 12, 4, 4) + battles("m-other", BASELINE, 8, 4, 8),
    )
    chat_votes(rater, "m-new", BASELINE, [1] * 7 + [4] * 3 + [7] * 6)

    everything = json.loads(run("leaderboard", "--json", "--anchor", BASELINE))
    one = json.loads(run("leaderboard", "--campaign", "arena", "--json"))
    chat = json.loads(run("leaderboard", "--campaign", "chat-votes", "--json"))

    ratings = {row["model"]: row["rating"] for row in everything}
    assert set(ratings) == {MODEL, BASELINE, "m-other", "m-new"}
    assert ratings[BASELINE] == pytest.approx(1000)
    assert ratings[MODEL] > ratings["m-new"] > ratings["m-other"] == pytest.approx(1000)
    assert {row["model"] for row in one} == {MODEL, "m-other", BASELINE}
    assert {row["model"]: row["n_battles"] for row in chat} == {
        "m-new": 16,
        BASELINE: 16,
    }


def test_leaderboard_leaves_out_models_under_the_minimum_battles():
    import_study(
        "arena",
        battles(MODEL, BASELINE, 12, 4, 4)
        + battles("m-other", BASELINE, 8, 4, 8)
        + battles("m-rare", MODEL, 1, 1, 1),
    )

    rows = json.loads(run("leaderboard", "--json", "--min-battles", "4"))

    assert {row["model"] for row in rows} == {MODEL, BASELINE, "m-other"}
    assert {row["model"]: row["n_battles"] for row in rows}[MODEL] == 20


def test_rater_agreement_json_has_alpha_per_category_and_the_rater_table():
    import_study("worked")

    report = json.loads(run("rater_agreement", "--campaign", "worked", "--json"))

    # The reference: the krippendorff package on the items rated at least twice.
    by_item = [[3, 1, 2, 0, -1], [-2, -3]]
    reliability = np.full((5, 2), np.nan)
    for column, scores in enumerate(by_item):
        reliability[: len(scores), column] = scores
    expected = krippendorff.alpha(
        reliability_data=reliability,
        level_of_measurement="ordinal",
        value_domain=[-3, -2, -1, 0, 1, 2, 3],
    )
    assert report["campaign"] == "worked"
    assert report["alpha"] == pytest.approx(expected)
    assert (report["n_items"], report["n_ratings"]) == (2, 7)
    assert [c["category"] for c in report["categories"]] == ["coding", "writing"]
    raters = {row["rater"]: row for row in report["raters"]}
    assert set(raters) == {"r1", "r2", "r3", "r4", "r5"}
    assert raters["r1"]["n_ratings"] == 3
    assert isinstance(raters["r1"]["flags"], list)


def test_without_json_the_commands_print_tables():
    import_study("worked", WORKED + battles(MODEL, BASELINE, 12, 4, 4, prompt="p3"))

    win_rates = run("win_rates", "--campaign", "worked")
    board = run("leaderboard", "--min-battles", "2")
    agreement = run("rater_agreement", "--campaign", "worked")

    assert "coding" in win_rates and "70.0" in win_rates
    assert MODEL in board and "rank" in board
    assert "alpha" in agreement and "r1" in agreement


def test_an_unknown_campaign_is_a_clear_error():
    with pytest.raises(CommandError, match="no campaign named 'nope'"):
        run("win_rates", "--campaign", "nope", "--json")
