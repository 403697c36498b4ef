"""A campaign's answers, made by a real Celery worker through real generation workers
(tiny-random and a saved copy of it as the baseline); a job killed halfway and run
again makes each missing answer once, never twice."""

import os
import signal
import time
import uuid

import pytest

from tests.conftest import start_celery, start_copy_worker
from tests.ratings.factories import make_prompt_set
from webapp.launcher import stop
from webapp.ratings import answer_jobs, services
from webapp.ratings.models import Answer, Campaign, Item
from webapp.ratings.tasks import generate_answers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL = "tiny-random"
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def baseline(redis_url, tmp_path_factory):
    """A second served model: a saved copy of tiny-random under its own name."""
    model, process = start_copy_worker(redis_url, tmp_path_factory.mktemp("base"))
    yield model
    stop(process)


def campaign_fields(prompt_set, baseline: str, **fields) -> dict:
    return {
        "name": f"c-{uuid.uuid4().hex[:6]}",
        "prompt_set": prompt_set,
        "model": MODEL,
        "baseline": baseline,
        "ratings_per_item": 2,
        "temperature": 1.0,
        "max_new_tokens": 40,
        "seed": 7,
        "gold_rate": 0.25,
        **fields,
    }


def wait_for(condition, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_new_campaign_gets_both_models_answers_and_opens(
    generation_worker, live_celery_worker, baseline
):
    prompt_set = make_prompt_set(prompts=4)
    campaign = services.create_campaign(campaign_fields(prompt_set, baseline))

    wait_for(
        lambda: Campaign.objects.get(pk=campaign.pk).status == "open", "the answers"
    )
    answers = Answer.objects.filter(campaign=campaign, degraded=False)
    assert answers.count() == 8 and not answers.exclude(status="done").exists()
    for answer in answers:
        assert answer.token_ids and len(answer.logprobs) == len(answer.token_ids)
        assert answer.prompt_token_ids[0] == 2  # BOS, then the chat format
        assert answer.params["temperature"] == 1.0
        assert answer.seed == answer_jobs.answer_seed(
            campaign, answer.prompt, answer.model, answer.variant
        )
        assert answer.submissions == 1
    items = Item.objects.filter(campaign=campaign)
    assert items.filter(gold="").count() == 4
    assert items.exclude(gold="").count() == 1  # a quarter of the prompts
    assert answer_jobs.progress(campaign) == {"done": 8, "failed": 0, "total": 8}


def start_answers_worker(queue: str):
    name = f"answers-{uuid.uuid4().hex[:6]}@localhost"
    return start_celery(name, queue, "-P", "threads", "-c", "2")


def test_a_job_killed_halfway_and_run_again_makes_each_answer_once(
    generation_worker, baseline
):
    prompt_set = make_prompt_set("many", prompts=20)
    fields = campaign_fields(prompt_set, baseline, max_new_tokens=120, gold_rate=0)
    campaign = Campaign.objects.create(**fields)
    queue = f"kill-{uuid.uuid4().hex[:6]}"  # only this test's workers take it

    first = start_answers_worker(queue)
    generate_answers.apply_async((campaign.pk,), queue=queue)
    done = Answer.objects.filter(campaign=campaign, status="done")
    wait_for(lambda: done.count() >= 6, "some answers")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    made_before = {a.pk: (a.request_id, a.text) for a in done}
    assert len(made_before) < 40

    second = start_answers_worker(queue)
    try:
        generate_answers.apply_async((campaign.pk,), queue=queue)
        wait_for(
            lambda: Campaign.objects.get(pk=campaign.pk).status == "open", "the rest"
        )
    finally:
        stop(second)

    answers = Answer.objects.filter(campaign=campaign)
    assert answers.count() == 40 and not answers.exclude(status="done").exists()
    assert set(answers.values_list("submissions", flat=True)) == {1}
    for pk, (request_id, text) in made_before.items():
        answer = answers.get(pk=pk)
        assert (answer.request_id, answer.text) == (request_id, text)


def test_a_model_against_itself_compares_two_samples_of_it():
    prompt_set = make_prompt_set("self", prompts=3)
    campaign = Campaign.objects.create(
        **campaign_fields(prompt_set, MODEL, gold_rate=0)
    )

    assert answer_jobs.plan_answers(campaign) == 6
    answers = Answer.objects.filter(campaign=campaign)
    assert sorted(answers.values_list("variant", flat=True)) == ["", "", "", *"bbb"]
    for prompt in prompt_set.prompts.all():
        first, second = answers.filter(prompt=prompt).order_by("variant")
        assert first.seed != second.seed  # two samples, not one twice
    answers.update(status="done", text="x")
    assert answer_jobs.build_items(campaign) == 3
    item = Item.objects.filter(campaign=campaign).first()
    assert (item.answer_a.variant, item.answer_b.variant) == ("", "b")
