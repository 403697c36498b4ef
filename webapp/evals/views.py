"""The dashboards (`/evals/`): a campaign's win rates, sides, agreement and raters,
and the leaderboard, each with its downloads; researchers and staff only.

Each page has a fragment view of its numbers, which the page fetches again when its
WebSocket says the ratings changed (`consumers`).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable

from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.accounts.access import researcher_required
from webapp.evals import charts, data, reports
from webapp.evals.forms import LeaderboardForm
from webapp.ratings.models import Campaign

GROUP_TITLES = {
    data.HUMAN: "Human raters",
    "judge": "Automatic judges",
    "simulated": "Simulated raters",
}


@researcher_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    campaigns = Campaign.objects.select_related("prompt_set").annotate(
        rating_count=Count("items__ratings")
    )
    return render(request, "evals/index.html", {"campaigns": campaigns})


# --- a campaign -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupView:
    """One rater group's numbers with their charts."""

    numbers: reports.GroupNumbers
    title: str
    win_chart: charts.IntervalChart
    side_chart: charts.IntervalChart


def numbers_html(campaign: Campaign, version: tuple[int, int] | None = None) -> str:
    """The page's numbers as HTML (what the page shows and its fragment view
    sends), rendered once per version of the campaign's ratings."""
    version = version or reports.campaign_version(campaign)

    def render_numbers() -> str:
        numbers = reports.campaign_numbers(campaign, version)
        groups = [
            GroupView(
                numbers=group,
                title=GROUP_TITLES[group.group],
                win_chart=charts.win_rate_chart(group.win_rates),
                side_chart=charts.win_rate_chart(group.sides),
            )
            for group in numbers.report.groups
        ]
        context = {
            "campaign": campaign,
            "report": numbers.report,
            "groups": groups,
            "raters": numbers.raters,
            "n_ratings": version[0],
            "shown_raters": reports.SHOWN_RATERS,
        }
        return render_to_string("evals/_campaign_numbers.html", context)

    return mark_safe(reports.cached("html", (campaign.pk, version), render_numbers))


@researcher_required
@require_GET
def campaign(request: HttpRequest, pk: int) -> HttpResponse:
    found = get_object_or_404(Campaign, pk=pk)
    context = {"campaign": found, "numbers": numbers_html(found)}
    return render(request, "evals/campaign.html", context)


@researcher_required
@never_cache
@require_GET
def campaign_fragment(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(numbers_html(get_object_or_404(Campaign, pk=pk)))


@researcher_required
@require_GET
def campaign_json(request: HttpRequest, pk: int) -> JsonResponse:
    found = get_object_or_404(Campaign, pk=pk)
    numbers = reports.campaign_numbers(found)
    body = {
        "campaign": {"id": found.pk, "name": found.name, "source": found.source},
        **numbers.report.to_dict(),
        "raters": numbers.raters.to_dict(),
    }
    return attachment(JsonResponse(body), f"{found.name}-evaluation.json")


@researcher_required
@require_GET
def campaign_csv(request: HttpRequest, pk: int, table: str) -> HttpResponse:
    """One of the page's tables as CSV: win_rates, sides, agreement, raters or
    rater_win_rates."""
    found = get_object_or_404(Campaign, pk=pk)
    numbers = reports.campaign_numbers(found)
    if table == "raters":
        rows = [q.to_dict() for q in numbers.raters.quality]
    elif table == "rater_win_rates":
        rows = [w.to_dict() for w in numbers.raters.win_rates]
    elif table in ("win_rates", "sides", "agreement"):
        rows = numbers.report.table(table)
    else:
        raise Http404("No such table.")
    return csv_download(rows, f"{found.name}-{table}.csv")


# --- the leaderboard --------------------------------------------------------------


def leaderboard_numbers(request: HttpRequest) -> tuple[dict, int]:
    """What the page and its fragment show, and the page's status (400 for bad
    options)."""
    form = LeaderboardForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        return {"form": form, "result": None}, 400
    options = form.options()
    result = reports.leaderboard(options)
    context = {"form": form, "options": options, "result": result}
    if result.board is not None:
        board = result.board
        models = [row.model for row in board.rows]
        context |= {
            "forest": charts.forest_plot(board.rows, reference=1000.0),
            "heat_map": charts.heat_map(models, board.win_rates),
            "matrix": list(zip(models, board.win_rates, strict=True)),
            "predicted": list(zip(models, board.predicted_win_rates, strict=True)),
            "query": request.GET.urlencode(),
        }
    return context, 200


@researcher_required
@require_GET
def leaderboard(request: HttpRequest) -> HttpResponse:
    context, status = leaderboard_numbers(request)
    return render(request, "evals/leaderboard.html", context, status=status)


@researcher_required
@never_cache
@require_GET
def leaderboard_fragment(request: HttpRequest) -> HttpResponse:
    context, status = leaderboard_numbers(request)
    return render(request, "evals/_leaderboard_numbers.html", context, status=status)


def _board_or_404(request: HttpRequest) -> reports.LeaderboardResult:
    form = LeaderboardForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        raise Http404("Bad leaderboard options.")
    result = reports.leaderboard(form.options())
    if result.board is None:
        raise Http404(result.problem)
    return result


@researcher_required
@require_GET
def leaderboard_json(request: HttpRequest) -> JsonResponse:
    board = _board_or_404(request).board
    return attachment(JsonResponse(board.to_dict()), "leaderboard.json")


@researcher_required
@require_GET
def leaderboard_csv(request: HttpRequest, table: str) -> HttpResponse:
    """The ratings (`ratings`) or the observed win-rate matrix (`win_rates`)."""
    board = _board_or_404(request).board
    if table == "ratings":
        rows = [row.to_dict() for row in board.rows]
    elif table == "win_rates":
        models = [row.model for row in board.rows]
        rows = [
            {"model": model, **dict(zip(models, values, strict=True))}
            for model, values in zip(models, board.win_rates, strict=True)
        ]
    else:
        raise Http404("No such table.")
    return csv_download(rows, f"leaderboard-{table}.csv")


# --- downloads --------------------------------------------------------------------


def attachment(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{safe_name(filename)}"'
    return response


def safe_name(filename: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)


def csv_download(rows: Iterable[dict], filename: str) -> HttpResponse:
    """Rows of dicts (one set of keys) as a CSV file; lists become "; "-joined."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    rows = list(rows)
    if rows:
        writer = csv.DictWriter(response, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: "; ".join(v) if isinstance(v, list | tuple) else v
                    for k, v in row.items()
                }
            )
    return attachment(response, filename)
