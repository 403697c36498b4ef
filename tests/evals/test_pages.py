"""The dashboards' pages with personas: a researcher and staff read them, raters and
strangers get 403, anonymous visitors go to login. What the pages show is what the
JSON downloads hold, model names are text, and judges are kept apart."""

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import logged_in, make_user
from tests.evals.html import table, titles
from tests.evals.studies import (
    BASELINE,
    MODEL,
    WORKED,
    battles,
    import_study,
)
from tests.ratings.factories import BASELINE as BASELINE_MODEL
from tests.ratings.factories import MODEL as MODEL_UNDER_TEST
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER
from webapp.evals import reports
from webapp.ratings import queue
from webapp.ratings.models import Rater, Rating

pytestmark = pytest.mark.django_db


def urls(campaign) -> list[str]:
    pk = campaign.pk
    return [
        reverse("evals:index"),
        reverse("evals:campaign", args=[pk]),
        reverse("evals:campaign-numbers", args=[pk]),
        reverse("evals:campaign-json", args=[pk]),
        reverse("evals:campaign-csv", args=[pk, "win_rates"]),
        reverse("evals:leaderboard") + "?min_battles=2",
        reverse("evals:leaderboard-numbers") + "?min_battles=2",
        reverse("evals:leaderboard-json") + "?min_battles=2",
        reverse("evals:leaderboard-csv", args=["ratings"]) + "?min_battles=2",
    ]


@pytest.fixture
def study():
    return import_study("study", WORKED + battles(MODEL, BASELINE, 12, 4, 4, "p3"))


def test_researchers_and_staff_read_every_page(researcher_client, study):
    staff = logged_in(make_user("stella", is_staff=True))
    for client in (researcher_client, staff):
        for url in urls(study):
            assert client.get(url).status_code == 200, url


def test_raters_and_strangers_get_403(rater_client, stranger_client, study):
    for client in (rater_client, stranger_client):
        for url in urls(study):
            assert client.get(url).status_code == 403, url


def test_anonymous_visitors_are_sent_to_login(study):
    for url in urls(study):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("accounts:login"))


def test_researchers_see_the_dashboards_link(researcher_client, rater_client):
    dashboards = reverse("evals:index").encode()
    assert dashboards in researcher_client.get(reverse("core:home")).content
    assert dashboards not in rater_client.get(reverse("core:home")).content


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def test_the_win_rate_table_and_chart_equal_the_json(researcher_client, study):
    page = researcher_client.get(reverse("evals:campaign", args=[study.pk]))
    body = researcher_client.get(reverse("evals:campaign-json", args=[study.pk]))

    rows = body.json()["groups"]["human"]["win_rates"]
    assert len(rows) == 6  # two pairs: all, coding, writing / all, coding, chat
    html = page.content.decode()
    assert table(html, "human-win-rate-table") == [
        [
            r["model"], r["baseline"], r["category"], percent(r["win_rate"]),
            f"{percent(r['ci_low'])} – {percent(r['ci_high'])}",
            percent(r["wins"]), percent(r["ties"]), percent(r["losses"]),
            str(r["n_ratings"]), str(r["n_prompts"]),
            percent(r["length_controlled"]),
        ]
        for r in rows
    ]  # fmt: skip
    charted = [
        f"{r['model']} vs {r['baseline']}: {r['category']}: "
        f"{percent(r['win_rate'])}% (95% CI {percent(r['ci_low'])}% "
        f"to {percent(r['ci_high'])}%)"
        for r in rows
    ]
    assert [t for t in titles(html) if t in charted] == charted


def test_the_side_and_rater_tables_equal_the_json(researcher_client, study):
    page = researcher_client.get(reverse("evals:campaign", args=[study.pk]))
    body = researcher_client.get(reverse("evals:campaign-json", args=[study.pk]))

    html = page.content.decode()
    sides = body.json()["groups"]["human"]["sides"]
    assert [row[:4] for row in table(html, "human-side-table")] == [
        [r["model"], r["baseline"], r["side"], percent(r["win_rate"])] for r in sides
    ]
    quality = body.json()["raters"]["quality"]
    assert sorted(row[:2] for row in table(html, "rater-table")) == sorted(
        [q["rater"], str(q["n_ratings"])] for q in quality
    )


def test_the_csv_downloads_hold_the_json_rows(researcher_client, study):
    body = researcher_client.get(reverse("evals:campaign-json", args=[study.pk]))
    response = researcher_client.get(
        reverse("evals:campaign-csv", args=[study.pk, "win_rates"])
    )

    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    expected = body.json()["groups"]["human"]["win_rates"]
    assert [(r["raters"], r["model"], r["category"]) for r in rows] == [
        ("human", r["model"], r["category"]) for r in expected
    ]
    assert [float(r["win_rate"]) for r in rows] == [r["win_rate"] for r in expected]
    missing = researcher_client.get(
        reverse("evals:campaign-csv", args=[study.pk, "nothing"])
    )
    assert missing.status_code == 404


def test_the_leaderboard_table_equals_its_json(researcher_client, study):
    page = researcher_client.get(reverse("evals:leaderboard"), {"min_battles": 2})
    body = researcher_client.get(reverse("evals:leaderboard-json"), {"min_battles": 2})

    rows = body.json()["rows"]
    html = page.content.decode()
    assert [row[:4] for row in table(html, "leaderboard-table")] == [
        [
            str(r["rank"]),
            r["model"],
            f"{r['rating']:.1f}",
            f"{r['ci_low']:.1f} – {r['ci_high']:.1f}",
        ]
        for r in rows
    ]
    assert "m-other" in body.json()["excluded"]
    assert 'class="chart heat-map"' in html
    assert len(table(html, "matrix-table")) == len(rows)


def test_bad_leaderboard_options_are_refused(researcher_client, study):
    page = researcher_client.get(reverse("evals:leaderboard"), {"min_battles": -1})
    unknown = researcher_client.get(
        reverse("evals:leaderboard"), {"anchor": "no-such-model", "min_battles": 2}
    )

    assert page.status_code == 400
    assert b"no-such-model" in unknown.content and b'id="problem"' in unknown.content


XSS = '<script>alert("model")</script>'
XSS_CATEGORY = "<img src=x onerror=alert(1)>"


def test_model_and_category_names_are_inert_text(researcher_client):
    campaign = import_study("xss", battles(XSS, BASELINE, 12, 4, 4))
    Rating.objects.update(rationale="")
    campaign.prompt_set.prompts.update(category=XSS_CATEGORY)

    pages = [
        researcher_client.get(reverse("evals:campaign", args=[campaign.pk])),
        researcher_client.get(reverse("evals:leaderboard")),
        researcher_client.get(reverse("evals:index")),
    ]

    for page in pages:
        html = page.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;model&quot;)&lt;/script&gt;" in (
        pages[0].content.decode()
    )
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0].content.decode()


def test_judges_are_kept_apart_from_people(researcher_client):
    people = battles(MODEL, BASELINE, 12, 4, 4)
    judge = [(p, c, a, b, -s, "judge-1", left) for p, c, a, b, s, _, left in people]
    campaign = import_study("judged", people + judge)
    Rater.objects.filter(name="judge-1").update(kind=Rater.Kind.JUDGE)

    body = researcher_client.get(reverse("evals:campaign-json", args=[campaign.pk]))
    page = researcher_client.get(reverse("evals:campaign", args=[campaign.pk]))
    board = researcher_client.get(reverse("evals:leaderboard-json"))
    judges = researcher_client.get(
        reverse("evals:leaderboard-json"), {"raters": "judge"}
    )

    groups = body.json()["groups"]
    assert groups["human"]["win_rates"][0]["win_rate"] == pytest.approx(0.7)
    assert groups["human"]["n_ratings"] == 20
    assert groups["judge"]["win_rates"][0]["win_rate"] == pytest.approx(0.3)
    assert "judge-1" not in {q["rater"] for q in body.json()["raters"]["quality"]}
    assert b"Automatic judges, kept apart" in page.content
    assert {r["n_battles"] for r in board.json()["rows"]} == {20}
    assert judges.json()["rows"][0]["model"] == BASELINE


def test_gold_items_and_swapped_repeats_count_only_for_raters(researcher_client):
    campaign = make_campaign(prompts=6, ratings_per_item=1, gold_rate=0.5)
    rater = queue.rater_for(make_user("gina", RATER))
    while (task := queue.next_task(rater)) is not None:
        queue.submit(rater, task.token, queue.Verdict(choice=2, active_seconds=9))
    gold = Rating.objects.filter(gold=True).count()
    assert gold

    body = researcher_client.get(reverse("evals:campaign-json", args=[campaign.pk]))

    human = body.json()["groups"]["human"]
    assert {(r["model"], r["baseline"]) for r in human["win_rates"]} == {
        (MODEL_UNDER_TEST, BASELINE_MODEL)
    }
    assert human["win_rates"][0]["n_ratings"] == Rating.objects.count() - gold
    (row,) = body.json()["raters"]["quality"]
    assert (row["n_ratings"], row["n_gold"]) == (Rating.objects.count(), gold)


def test_a_report_is_computed_once_until_a_rating_arrives(
    study, django_assert_num_queries
):
    first = reports.campaign_report(study)
    first_raters = reports.rater_report(study)
    with django_assert_num_queries(1):  # the ratings' version, nothing more
        version = reports.campaign_version(study)
        again = reports.campaign_report(study, version)
        raters = reports.rater_report(study, version)
    assert (again, raters) == (first, first_raters)

    import_study("study", [("p2", "writing", MODEL, BASELINE, 3, "r9", "a")])
    changed = reports.campaign_report(study)

    writing = [c for c in changed.human.win_rates if c.slice == "writing"]
    assert writing[0].rate.n_ratings == 3
    assert changed != first


def test_a_campaigns_page_links_to_its_dashboard_and_shows_adaptive_overlap(
    researcher_client,
):
    fixed = make_campaign("fixed")
    adaptive = make_campaign(
        "adaptive", adaptive=True, k_min=2, k_max=6, target_ci_width=0.08
    )

    fixed_page = researcher_client.get(reverse("ratings:campaign", args=[fixed.pk]))
    adaptive_page = researcher_client.get(
        reverse("ratings:campaign", args=[adaptive.pk])
    )

    dashboard = reverse("evals:campaign", args=[fixed.pk])
    assert f'href="{dashboard}"'.encode() in fixed_page.content
    assert b'id="adaptive"' not in fixed_page.content
    shown = adaptive_page.content.decode()
    assert "K min = 2" in shown and "K max = 6" in shown and "wider than 0.08" in shown
