"""The ratings pages: the rater's page (`/rate/`) and the researchers' pages for
campaigns and prompt sets (`/ratings/`). Writes go through `queue` and `services`.

The rater's page is blind (see `webapp.ratings.shown`): a task is addressed by its
assignment's token only, and a submit redirects back to `/rate/`.
"""

from __future__ import annotations

import io
import tempfile
import uuid
from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Avg, Count, F, Q
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.access import rater_required, researcher_required
from webapp.ratings import answer_jobs, export, queue, services
from webapp.ratings.forms import (
    AnswersUploadForm,
    CampaignForm,
    ExportForm,
    GuidelinesForm,
    PromptUploadForm,
    SkipForm,
    VerdictForm,
    first_error,
)
from webapp.ratings.models import Assignment, Campaign, Item, PromptSet, Rating
from webapp.ratings.shown import shown_task

PAGE_SIZE = 50

# --- the rater's page -----------------------------------------------------------------


@rater_required
@never_cache
@require_GET
def rate(request: HttpRequest) -> HttpResponse:
    assignment = queue.next_task(queue.rater_for(request.user))
    context = {
        "task": shown_task(assignment) if assignment else None,
        "choices": queue.CHOICES.items(),
        "skip_reasons": queue.SKIP_REASONS.items(),
    }
    return render(request, "ratings/rate.html", context)


@rater_required
@require_POST
def answer(request: HttpRequest, token: uuid.UUID) -> HttpResponse:
    """The page's form: a verdict, or a skip (`action=skip`) with its reason."""
    skipping = request.POST.get("action") == "skip"
    form = SkipForm(request.POST) if skipping else VerdictForm(request.POST)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect("ratings:rate")
    rater = queue.rater_for(request.user)
    try:
        if skipping:
            queue.skip(rater, token, form.cleaned_data["reason"])
        else:
            queue.submit(rater, token, form.verdict())
    except queue.TaskError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Skipped." if skipping else "Saved.")
    return redirect("ratings:rate")


# --- campaigns ------------------------------------------------------------------------


@researcher_required
@require_GET
def campaign_list(request: HttpRequest) -> HttpResponse:
    campaigns = Campaign.objects.select_related("prompt_set").annotate(
        item_count=Count("items", filter=Q(items__gold="")),
        rating_count=Count("items__ratings"),
    )
    return render(request, "ratings/campaign_list.html", {"campaigns": campaigns})


@researcher_required
def campaign_create(request: HttpRequest) -> HttpResponse:
    form = CampaignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            campaign = services.create_campaign(
                form.campaign_fields(),
                raters=form.cleaned_data["raters"],
                user=request.user,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Campaign created; its answers are being made.")
            return redirect("ratings:campaign", pk=campaign.pk)
    status = 400 if form.is_bound else 200
    return render(request, "ratings/campaign_form.html", {"form": form}, status=status)


@researcher_required
@require_GET
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return campaign_page(request, get_campaign(pk))


def get_campaign(pk: int) -> Campaign:
    return get_object_or_404(Campaign.objects.select_related("prompt_set"), pk=pk)


def campaign_page(
    request: HttpRequest,
    campaign: Campaign,
    answers_form: AnswersUploadForm | None = None,
    status: int = 200,
) -> HttpResponse:
    waiting = (
        Item.objects.filter(campaign=campaign, gold="", rated__lt=F("needed"))
        .select_related("prompt")
        .only("rated", "needed", "prompt__external_id", "prompt__category")
        .order_by("rated", "pk")
    )
    context = {
        "campaign": campaign,
        "progress": answer_jobs.progress(campaign),
        "categories": category_progress(campaign),
        "waiting": Paginator(waiting, PAGE_SIZE).get_page(request.GET.get("page")),
        "raters": rater_counts(campaign),
        "guidelines_form": GuidelinesForm(initial={"guidelines": campaign.guidelines}),
        "answers_form": answers_form or AnswersUploadForm(),
        "export_form": ExportForm(),
    }
    return render(request, "ratings/campaign_detail.html", context, status=status)


def category_progress(campaign: Campaign) -> list[dict]:
    """Per category: items, and items with all the ratings they need (gold apart)."""
    return list(
        Item.objects.filter(campaign=campaign, gold="")
        .values(category=F("prompt__category"))
        .annotate(
            items=Count("pk"), complete=Count("pk", filter=Q(rated__gte=F("needed")))
        )
        .order_by("category")
    )


def rater_counts(campaign: Campaign) -> list[dict]:
    """Per rater: ratings (gold and swapped repeats counted apart), mean active
    seconds and skips."""
    rows = {
        row["rater__name"]: {**row, "skips": 0}
        for row in Rating.objects.filter(item__campaign=campaign)
        .values("rater__name")
        .annotate(
            ratings=Count("pk", filter=Q(gold=False, repeat=False)),
            gold=Count("pk", filter=Q(gold=True)),
            repeats=Count("pk", filter=Q(repeat=True)),
            seconds=Avg("active_seconds"),
        )
    }
    skips = (
        Assignment.objects.filter(
            item__campaign=campaign, status=Assignment.Status.SKIPPED
        )
        .values_list("rater__name")
        .annotate(n=Count("pk"))
    )
    for name, count in skips:
        rows.setdefault(
            name,
            {"rater__name": name, "ratings": 0, "gold": 0, "repeats": 0},
        )["skips"] = count
    return sorted(rows.values(), key=lambda row: (-row["ratings"], row["rater__name"]))


@researcher_required
@never_cache
@require_GET
def campaign_progress(request: HttpRequest, pk: int) -> JsonResponse:
    """The answers' progress, which the campaign page polls while they are made."""
    campaign = get_campaign(pk)
    return JsonResponse({"status": campaign.status, **answer_jobs.progress(campaign)})


def campaign_action(
    request: HttpRequest, campaign: Campaign, change: Callable[[], object], done: str
) -> HttpResponse:
    """Runs a service's change; its refusal or `done` is the next page's message."""
    try:
        change()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, done)
    return redirect("ratings:campaign", pk=campaign.pk)


@researcher_required
@require_POST
def campaign_guidelines(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign(pk)
    form = GuidelinesForm(request.POST)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect("ratings:campaign", pk=campaign.pk)
    return campaign_action(
        request,
        campaign,
        lambda: services.set_guidelines(campaign, form.cleaned_data["guidelines"]),
        "Guidelines saved; raters see them from their next task.",
    )


@researcher_required
@require_POST
def campaign_status(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign(pk)
    status = request.POST.get("status", "")
    return campaign_action(
        request,
        campaign,
        lambda: services.set_status(campaign, status),
        f"The campaign is {status}.",
    )


@researcher_required
@require_POST
def campaign_resume(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign(pk)
    return campaign_action(
        request,
        campaign,
        lambda: services.resume_answers(campaign),
        "The answer job is queued; it makes only the answers still missing.",
    )


@researcher_required
@require_POST
def campaign_import_answers(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign(pk)
    form = AnswersUploadForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        count = form.run_import(
            lambda: answer_jobs.import_answers(campaign, upload.file)
        )
        if count is not None:
            messages.success(request, f"Imported {count} answers.")
            return redirect("ratings:campaign", pk=campaign.pk)
    return campaign_page(request, campaign, answers_form=form, status=400)


@researcher_required
@require_GET
def campaign_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The campaign's preference pairs as a JSON-lines download, written to a
    temporary file first so that a large campaign is not held in memory."""
    campaign = get_campaign(pk)
    form = ExportForm(request.GET)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect("ratings:campaign", pk=campaign.pk)
    spool = tempfile.TemporaryFile()
    text = io.TextIOWrapper(spool, encoding="utf-8")
    export.write_preferences(
        campaign,
        text,
        ties=form.cleaned_data["ties"],
        majority=form.cleaned_data["per"] == "majority",
    )
    text.flush()
    text.detach().seek(0)
    return FileResponse(
        spool,
        as_attachment=True,
        filename=f"{campaign.name}-preferences.jsonl",
        content_type="application/jsonl",
    )


# --- prompt sets ----------------------------------------------------------------------


@researcher_required
def prompt_set_list(request: HttpRequest) -> HttpResponse:
    form = PromptUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        imported = form.import_prompts(request.user)
        if imported is not None:
            prompt_set, count = imported
            messages.success(request, f"Imported {count} prompts into {prompt_set}.")
            return redirect("ratings:prompt-set", pk=prompt_set.pk)
    prompt_sets = PromptSet.objects.annotate(
        prompt_count=Count("prompts"),
        category_count=Count("prompts__category", distinct=True),
    )
    context = {"prompt_sets": prompt_sets, "form": form}
    status = 400 if form.is_bound else 200
    return render(request, "ratings/prompt_set_list.html", context, status=status)


@researcher_required
@require_GET
def prompt_set_detail(request: HttpRequest, pk: int) -> HttpResponse:
    prompt_set = get_object_or_404(PromptSet, pk=pk)
    prompts = prompt_set.prompts.order_by("pk")
    categories = (
        prompts.values("category").annotate(count=Count("pk")).order_by("category")
    )
    context = {
        "prompt_set": prompt_set,
        "categories": categories,
        "prompts": Paginator(prompts, PAGE_SIZE).get_page(request.GET.get("page")),
    }
    return render(request, "ratings/prompt_set_detail.html", context)
