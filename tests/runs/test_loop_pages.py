"""The loop page of a campaign: each step's form starts the right run or campaign,
with the right data; refusals change nothing; researchers only."""

import json
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from model_service.checkpoints import reward_head
from model_service.registry import load_model
from tests.conftest import logged_in, make_user
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER, RESEARCHER
from webapp.ratings import queue
from webapp.ratings.models import Campaign
from webapp.runs import loop
from webapp.runs.models import CatalogModel, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher_client():
    return logged_in(make_user("rosa", RESEARCHER))


@pytest.fixture
def campaign(settings, tmp_path):
    settings.RUNS_DIR = tmp_path / "runs"
    campaign = make_campaign(prompts=20, ratings_per_item=1)
    Campaign.objects.filter(pk=campaign.pk).update(model="tiny-random")
    campaign.refresh_from_db()
    return campaign


def rate_all(campaign):
    alice = queue.rater_for(make_user("alice", RATER))
    while (task := queue.next_task(alice)) is not None:
        queue.submit(alice, task.token, queue.Verdict(choice=1))


def url(name, campaign):
    return reverse(f"runs:{name}", args=[campaign.pk])


def test_only_researchers_reach_it(campaign, client):
    assert (
        logged_in(make_user("alice", RATER))
        .get(url("campaign-loop", campaign))
        .status_code
        == 403
    )
    assert client.get(url("campaign-loop", campaign)).status_code == 302


def test_a_reward_model_needs_ratings_then_trains_on_the_export(
    campaign, researcher_client, django_capture_on_commit_callbacks
):
    form = {
        "name": "rm",
        "steps": 5,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_length": 64,
    }
    refused = researcher_client.post(url("loop-reward-model", campaign), form)
    assert refused.status_code == 400 and b"no ratings" in refused.content
    assert not Run.objects.exists()

    rate_all(campaign)
    with django_capture_on_commit_callbacks() as queued:
        response = researcher_client.post(url("loop-reward-model", campaign), form)

    run = Run.objects.get()
    assert response.status_code == 302 and len(queued) == 1
    assert (run.kind, run.campaign, run.config["model"]) == (
        "reward-model",
        campaign,
        "tiny-random",
    )
    lines = Path(run.config["train_data"]).read_text().splitlines()
    assert len(lines) == 20 and {"prompt", "chosen", "rejected"} <= set(
        json.loads(lines[0])
    )


def finished_reward_run(campaign, tmp_path) -> Run:
    tiny = load_model("tiny-random")
    head = reward_head.RewardHead(np.zeros(tiny.config.embed_dim), 0.0, 1.0)
    reward_head.save(tmp_path / "rm", tiny.params, tiny.config, head)
    return Run.objects.create(
        kind=Run.Kind.REWARD_MODEL, name="rm", config={}, steps=1, campaign=campaign,
        status=Run.Status.FINISHED, final={"checkpoint": str(tmp_path / "rm")},
    )  # fmt: skip


def test_rlhf_trains_on_the_prompts_not_held_out(
    campaign, researcher_client, tmp_path, django_capture_on_commit_callbacks
):
    reward_run = finished_reward_run(campaign, tmp_path)
    form = {
        "name": "rl", "reward_run": reward_run.pk, "steps": 2, "prompts_per_step": 2,
        "k": 2, "learning_rate": 1e-4, "beta": 0.05, "target_kl": 4,
        "max_new_tokens": 8, "max_length": 64, "judge": "",
    }  # fmt: skip
    with django_capture_on_commit_callbacks() as queued:
        response = researcher_client.post(url("loop-rlhf", campaign), form)

    assert response.status_code == 302 and len(queued) == 1
    run = Run.objects.get(kind=Run.Kind.REINFORCE)
    assert run.config["reward_model"] == reward_run.checkpoint
    assert run.config["target_kl"] == 4
    trained = {json.loads(line)["id"] for line in Path(run.config["train_data"]).open()}
    held = {p.external_id for p in loop.campaign_prompts(campaign, held=True)}
    assert trained and held and not trained & held
    assert len(trained) + len(held) == 20


def test_evaluate_pits_the_policy_against_the_initial_model_on_held_out_prompts(
    campaign, researcher_client, django_capture_on_commit_callbacks
):
    run = Run.objects.create(
        kind=Run.Kind.REINFORCE, name="rl", config={}, steps=1, campaign=campaign,
        status=Run.Status.FINISHED,
    )  # fmt: skip
    policy = CatalogModel.objects.create(
        name="better", kind="policy", path="/x", run=run
    )
    with django_capture_on_commit_callbacks() as queued:
        response = researcher_client.post(
            url("loop-evaluate", campaign), {"name": "eval", "policy": policy.pk}
        )

    evaluation = Campaign.objects.get(name="eval")
    assert response.status_code == 302 and len(queued) == 1  # its answers job
    assert (evaluation.model, evaluation.baseline) == ("better", "tiny-random")
    held = {p.external_id for p in loop.campaign_prompts(campaign, held=True)}
    assert (
        set(evaluation.prompt_set.prompts.values_list("external_id", flat=True)) == held
    )


def test_a_judge_is_queued_after_the_commit(
    campaign, researcher_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        response = researcher_client.post(
            url("loop-judge", campaign), {"judge": "tiny-random"}
        )
    assert response.status_code == 302 and len(queued) == 1
