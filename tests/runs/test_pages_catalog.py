"""The catalog's pages against a real generation worker started with `--catalog`:
a tiny reward model and a tiny policy registered in the catalog are served by name;
the reward model scores answers from its page and its JSON endpoint (session or API
key) exactly as the model itself does; the chat and the new-campaign form offer the
policy and not the reward model."""

import sys
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from model_service import protocol
from model_service.checkpoints import flax_params, reward_head
from model_service.client import GenerationClient
from model_service.registry import load_model
from model_service.reward import RewardModel
from tests.conftest import wait_until, worker_env
from webapp.api.models import ApiKey
from webapp.chat.forms import NewConversationForm
from webapp.core import serving
from webapp.launcher import spawn, stop
from webapp.ratings.forms import CampaignForm
from webapp.runs import services
from webapp.runs.models import CatalogModel

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROMPT, ANSWER = "Name a colour.", "Blue, like the sea."


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[dict[str, CatalogModel]]:
    """A tiny reward model (held-out mean 1, std 2) and a tiny policy on disk,
    published to the workers under names of their own (the tests save the rows)."""
    directory = tmp_path_factory.mktemp("catalog")
    tiny = load_model("tiny-random")
    head = reward_head.RewardHead(
        weight=[0.1] * tiny.config.embed_dim, reward_mean=1.0, reward_std=2.0
    )
    reward_head.save(directory / "rm", tiny.params, tiny.config, head)
    flax_params.save(directory / "policy", tiny.params, tiny.config)
    suffix = uuid.uuid4().hex[:6]
    models = {
        "rm": CatalogModel(
            name=f"colour-rm-{suffix}",
            kind=CatalogModel.Kind.REWARD_MODEL,
            path=str(directory / "rm"),
            reward_mean=1.0,
            reward_std=2.0,
        ),
        "policy": CatalogModel(
            name=f"chat-policy-{suffix}",
            kind=CatalogModel.Kind.POLICY,
            path=str(directory / "policy"),
        ),
    }
    for model in models.values():
        services.publish(model)
    yield models
    serving.client().redis.hdel(
        protocol.CATALOG_KEY, *(m.name for m in models.values())
    )


@pytest.fixture(scope="module")
def catalog_worker(published) -> Iterator[str]:
    """A generation worker that serves the catalog only, once it serves both."""
    worker_id = f"test-catalog-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "model_service.worker", "--redis-url", settings.REDIS_URL,
        "--catalog", "--worker-id", worker_id,
    ]  # fmt: skip
    process = spawn(command, env=worker_env())
    client = GenerationClient(settings.REDIS_URL)
    names = {model.name for model in published.values()}

    def serves_both() -> bool:
        return names <= set(client.alive_workers().get(worker_id, {}).get("models", {}))

    try:
        wait_until(serves_both, process, "catalog worker")
        yield worker_id
    finally:
        stop(process)
        client.close()


@pytest.fixture
def catalog(published, catalog_worker) -> dict[str, CatalogModel]:
    """Both in this test's catalog, as registered (published again: no change)."""
    for model in published.values():
        model.pk = None
        model.save()
        services.publish(model)
    return published


def test_a_served_reward_model_scores_answers_from_its_page_and_its_api(
    researcher, researcher_client, catalog
):
    rm = catalog["rm"]
    reward_model = RewardModel.load(rm.path)
    ids = reward_model.answer_ids([{"role": "user", "content": PROMPT}], ANSWER)
    expected = float(reward_model.rewards([ids])[0])

    listed = researcher_client.get(reverse("runs:models")).context["models"]
    page = researcher_client.post(
        reverse("runs:model", args=[rm.name]), {"prompt": PROMPT, "answer": ANSWER}
    )
    by_session = researcher_client.post(
        reverse("runs:api-score", args=[rm.name]),
        {"prompt": PROMPT, "answer": ANSWER},
        content_type="application/json",
    )
    too_long = researcher_client.post(
        reverse("runs:api-score", args=[rm.name]),
        {"prompt": PROMPT, "answer": "blue " * 1000},
        content_type="application/json",
    )
    raw_key = ApiKey.objects.create_key(researcher)[1]
    by_key = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}").post(
        reverse("runs:api-score", args=[rm.name]),
        {"prompt": PROMPT, "answer": ANSWER},
        content_type="application/json",
    )

    assert {model.name: served for model, served in listed} == {
        rm.name: True,
        catalog["policy"].name: True,
    }
    assert page.status_code == 200 and page.context["served"]
    score = page.context["score"]
    assert score["reward"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert score["normalized_reward"] == pytest.approx(
        (expected - 1.0) / 2.0, rel=1e-4, abs=1e-4
    )
    assert f"{score['reward']:.4g}" in page.content.decode()
    assert by_session.status_code == 200 and by_session.json() == score
    assert by_key.status_code == 200 and by_key.json() == score
    assert too_long.status_code == 400 and "tokens" in too_long.json()["error"]


def test_the_chat_and_new_campaigns_offer_served_policies_not_reward_models(catalog):
    policy, rm = catalog["policy"].name, catalog["rm"].name
    offered = {
        "chat": NewConversationForm().fields["model_name"].choices,
        "campaign model": CampaignForm().fields["model"].choices,
        "campaign baseline": CampaignForm().fields["baseline"].choices,
    }

    for where, choices in offered.items():
        names = [name for name, _label in choices]
        assert policy in names and rm not in names, where
