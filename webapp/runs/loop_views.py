"""The loop page of a campaign: its reward models, RLHF runs, trained policies and
evaluations, with a form for each next step (`webapp.runs.loop`) and the judge."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.accounts.access import researcher_required
from webapp.ratings.models import Campaign
from webapp.runs import loop
from webapp.runs.forms import (
    EvaluateStepForm,
    JudgeStepForm,
    RewardModelStepForm,
    RlhfStepForm,
)
from webapp.runs.models import CatalogModel, Run


def loop_forms(campaign: Campaign, data=None, **bound) -> dict:
    """Every step's form; the one named in `bound` gets the posted data."""
    forms = {
        "reward_form": RewardModelStepForm(
            initial={"name": f"{campaign.name} reward model"}
        ),
        "rlhf_form": RlhfStepForm(campaign, initial={"name": f"{campaign.name} RLHF"}),
        "evaluate_form": EvaluateStepForm(
            campaign, initial={"name": f"{campaign.name} evaluation"}
        ),
        "judge_form": JudgeStepForm(),
    }
    forms.update(bound)
    return forms


@researcher_required
def campaign_loop(request: HttpRequest, pk: int, **bound) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    runs = Run.objects.filter(campaign=campaign)
    context = {
        "campaign": campaign,
        "reward_runs": runs.filter(kind=Run.Kind.REWARD_MODEL),
        "rlhf_runs": runs.filter(kind=Run.Kind.REINFORCE),
        "policies": CatalogModel.objects.filter(run__campaign=campaign),
        "evaluations": Campaign.objects.filter(baseline=campaign.model)
        .exclude(pk=campaign.pk)
        .filter(
            model__in=CatalogModel.objects.filter(run__campaign=campaign).values("name")
        ),
        **loop_forms(campaign, **bound),
    }
    status = 400 if bound else 200
    return render(request, "runs/campaign_loop.html", context, status=status)


def take_step(
    request: HttpRequest,
    campaign: Campaign,
    form,
    form_name: str,
    step: Callable[[], object],
    then: Callable[[object], HttpResponse],
) -> HttpResponse:
    """Runs a step of the loop from a bound form; a refusal shows on the page."""
    if form.is_valid():
        try:
            made = step()
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return then(made)
    return campaign_loop(request, campaign.pk, **{form_name: form})


@researcher_required
@require_POST
def train_reward_model(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    form = RewardModelStepForm(request.POST)
    return take_step(
        request,
        campaign,
        form,
        "reward_form",
        lambda: loop.train_reward_model(
            campaign, form.cleaned_data["name"], form.settings(), user=request.user
        ),
        lambda run: redirect("runs:run", pk=run.pk),
    )


@researcher_required
@require_POST
def run_rlhf(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    form = RlhfStepForm(campaign, request.POST)
    return take_step(
        request,
        campaign,
        form,
        "rlhf_form",
        lambda: loop.run_rlhf(
            campaign,
            form.cleaned_data["reward_run"],
            form.cleaned_data["name"],
            form.settings(),
            user=request.user,
        ),
        lambda run: redirect("runs:run", pk=run.pk),
    )


@researcher_required
@require_POST
def evaluate(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    form = EvaluateStepForm(campaign, request.POST)
    return take_step(
        request,
        campaign,
        form,
        "evaluate_form",
        lambda: loop.evaluate(
            campaign,
            form.cleaned_data["policy"],
            form.cleaned_data["name"],
            user=request.user,
        ),
        lambda made: redirect("ratings:campaign", pk=made.pk),
    )


@researcher_required
@require_POST
def judge(request: HttpRequest, pk: int) -> HttpResponse:
    from webapp.ratings.tasks import judge_campaign

    campaign = get_object_or_404(Campaign, pk=pk)
    form = JudgeStepForm(request.POST)
    if not form.is_valid():
        return campaign_loop(request, pk, judge_form=form)
    name = form.cleaned_data["judge"]
    transaction.on_commit(lambda: judge_campaign.delay(campaign.pk, name))
    messages.success(
        request, f"{form.cleaned_data['judge']} will rate the campaign as a judge."
    )
    return redirect("runs:campaign-loop", pk=pk)
