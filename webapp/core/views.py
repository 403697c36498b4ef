from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.accounts.access import researcher_required
from webapp.accounts.roles import is_rater, is_researcher
from webapp.core.health import system_health


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when database, Redis, Celery and generation worker are all ok, else 503."""
    health = system_health()
    return JsonResponse(health, status=200 if health["ok"] else 503)


def home(request: HttpRequest) -> HttpResponse:
    context = {
        "is_rater": is_rater(request.user),
        "is_researcher": is_researcher(request.user),
    }
    return render(request, "core/home.html", context)


@researcher_required
@never_cache
def status(request: HttpRequest) -> HttpResponse:
    """The /healthz details for researchers, as a page."""
    return render(request, "core/status.html", {"health": system_health()})
