"""The researchers' pages under `/ratings/` (campaigns, prompt sets) and the admin,
with personas: a researcher, a rater, a stranger and an anonymous visitor."""

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.conftest import logged_in, make_user
from tests.ratings.factories import BASELINE, MODEL, make_campaign, make_prompt_set
from webapp.accounts.roles import RATER
from webapp.ratings import queue
from webapp.ratings.models import Answer, Campaign, Item, Prompt, PromptSet, Rating

pytestmark = pytest.mark.django_db

PROMPT_SETS = reverse("ratings:prompt-sets")
BAD_PROMPTS = (
    b'{"id": "a", "prompt": "Fine", "category": "chat"}\n'
    b'{"id": "b", "prompt": ""}\n'
    b"not json\n"
    b'{"id": "a", "prompt": "Again", "category": "Bad Category"}\n'
    b'{"prompt": "\xff\xfe"}\n'
)


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content)


def rate_all(campaign: Campaign, *usernames: str, choice: int = 2) -> None:
    for name in usernames:
        rater = queue.rater_for(make_user(name, RATER))
        while (task := queue.next_task(rater)) is not None:
            queue.submit(rater, task.token, queue.Verdict(choice=choice))


def researcher_urls(campaign: Campaign) -> dict[str, str]:
    """Each researcher page, by the method that opens it."""
    pk = campaign.pk
    return {
        reverse("ratings:campaigns"): "get",
        reverse("ratings:campaign-create"): "get",
        reverse("ratings:campaign", args=[pk]): "get",
        reverse("ratings:progress", args=[pk]): "get",
        reverse("ratings:export", args=[pk]): "get",
        reverse("ratings:guidelines", args=[pk]): "post",
        reverse("ratings:status", args=[pk]): "post",
        reverse("ratings:resume", args=[pk]): "post",
        reverse("ratings:import-answers", args=[pk]): "post",
        PROMPT_SETS: "get",
        reverse("ratings:prompt-set", args=[campaign.prompt_set_id]): "get",
    }


# --- who may open them ----------------------------------------------------------------


def test_raters_and_strangers_get_403_and_change_nothing(rater_client, stranger_client):
    campaign = make_campaign(guidelines="Keep me.")
    for client in (rater_client, stranger_client):
        for url, method in researcher_urls(campaign).items():
            data = {"guidelines": "changed", "status": "closed"}
            response = getattr(client, method)(url, data)
            assert response.status_code == 403, url
    campaign.refresh_from_db()
    assert (campaign.guidelines, campaign.status) == ("Keep me.", "open")


def test_anonymous_people_are_sent_to_login(db):
    campaign = make_campaign()
    for url in researcher_urls(campaign):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("accounts:login"))


# --- campaigns ------------------------------------------------------------------------


def test_the_list_shows_campaigns_with_their_counts(researcher_client):
    campaign = make_campaign("listed", prompts=3, ratings_per_item=1)
    rate_all(campaign, "alice")

    response = researcher_client.get(reverse("ratings:campaigns"))

    assert response.status_code == 200
    row = next(c for c in response.context["campaigns"] if c.pk == campaign.pk)
    assert (row.item_count, row.rating_count) == (3, 3)
    assert b"listed" in response.content and MODEL.encode() in response.content


def test_the_form_offers_the_sets_categories_and_the_raters(researcher_client):
    make_prompt_set("mixed", prompts=4, categories=("coding", "poetry"))
    make_user("alice", RATER)

    response = researcher_client.get(reverse("ratings:campaign-create"))

    html = response.content.decode()
    assert '<optgroup label="mixed">' in html
    assert '<option value="coding">' in html and '<option value="poetry">' in html
    assert ">alice</option>" in html and ">rosa</option>" not in html


def test_the_form_refuses_categories_of_another_set(researcher_client):
    mine = make_prompt_set("mine", prompts=2, categories=("chat",))
    make_prompt_set("other", prompts=2, categories=("coding",))

    response = researcher_client.post(
        reverse("ratings:campaign-create"),
        {"name": "c", "prompt_set": mine.pk, "categories": ["coding"]},
    )

    assert response.status_code == 400
    assert (
        "Not categories of mine: coding."
        in response.context["form"].errors["categories"]
    )
    assert not Campaign.objects.exists()


@pytest.mark.slow
def test_a_researcher_creates_a_campaign_of_served_models(
    researcher, researcher_client, generation_worker, full_worker,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    prompt_set = make_prompt_set("mixed", prompts=4, categories=("coding", "poetry"))
    alice = make_user("alice", RATER)
    form = {
        "name": "tiny vs copy",
        "prompt_set": prompt_set.pk,
        "categories": ["poetry"],
        "model": "tiny-random",
        "baseline": full_worker,
        "ratings_per_item": 3,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_new_tokens": 32,
        "seed": 7,
        "guidelines": "Be fair.",
        "gold_rate": 0.1,
        "repeat_rate": 0.05,
        "daily_cap": 50,
        "lease_seconds": 300,
        "raters": [alice.pk],
    }
    url = reverse("ratings:campaign-create")

    unserved = researcher_client.post(url, {**form, "model": "nope"})
    assert unserved.status_code == 400
    assert not Campaign.objects.exists()

    with django_capture_on_commit_callbacks() as callbacks:
        response = researcher_client.post(url, form)

    campaign = Campaign.objects.get()
    assert response["Location"] == reverse("ratings:campaign", args=[campaign.pk])
    assert (campaign.model, campaign.baseline) == ("tiny-random", full_worker)
    assert (campaign.categories, campaign.ratings_per_item) == (["poetry"], 3)
    assert (campaign.seed, campaign.created_by, campaign.status) == (
        7,
        researcher,
        Campaign.Status.GENERATING,
    )
    assert list(campaign.raters.all()) == [alice]
    assert len(callbacks) == 1  # the answer job, queued after the commit


def test_the_campaign_page_shows_progress_items_waiting_and_raters(
    researcher_client,
):
    campaign = make_campaign(
        prompts=4, ratings_per_item=2, categories=("chat", "code"), gold_rate=0.5
    )
    rate_all(campaign, "alice")  # every item gets one rating of the two it needs
    bob = queue.rater_for(make_user("bob", RATER))
    queue.skip(bob, queue.next_task(bob).token, "broken")

    response = researcher_client.get(reverse("ratings:campaign", args=[campaign.pk]))

    assert response.status_code == 200
    context = response.context
    assert context["progress"] == {"done": 8, "failed": 0, "total": 8}
    assert context["categories"] == [
        {"category": "chat", "items": 2, "complete": 0},
        {"category": "code", "items": 2, "complete": 0},
    ]
    assert context["waiting"].paginator.count == 4
    raters = {row["rater__name"]: row for row in context["raters"]}
    assert raters["user:alice"]["ratings"] == 4
    assert raters["user:alice"]["gold"] == Rating.objects.filter(gold=True).count()
    assert raters["user:bob"]["skips"] == 1
    assert MODEL.encode() in response.content and BASELINE.encode() in response.content


def test_progress_is_json_for_the_polling_bar(researcher_client):
    campaign = make_campaign(prompts=2, status=Campaign.Status.GENERATING)
    Answer.objects.filter(campaign=campaign, model=BASELINE).update(
        status=Answer.Status.PENDING
    )

    response = researcher_client.get(reverse("ratings:progress", args=[campaign.pk]))

    assert response.json() == {
        "status": "generating",
        "done": 2,
        "failed": 0,
        "total": 4,
    }


def test_the_guidelines_editor_saves_markdown_and_refuses_too_long(
    researcher_client,
):
    campaign = make_campaign()
    url = reverse("ratings:guidelines", args=[campaign.pk])

    saved = researcher_client.post(url, {"guidelines": "# Be *fair*"}, follow=True)
    refused = researcher_client.post(url, {"guidelines": "x" * 50_001}, follow=True)

    assert [str(m) for m in saved.context["messages"]][0].startswith("Guidelines")
    assert "at most 50,000" in [str(m) for m in refused.context["messages"]][0]
    campaign.refresh_from_db()
    assert campaign.guidelines == "# Be *fair*"


def test_close_and_reopen(researcher_client, rater_client):
    campaign = make_campaign()
    url = reverse("ratings:status", args=[campaign.pk])

    researcher_client.post(url, {"status": "closed"})
    campaign.refresh_from_db()
    assert campaign.status == "closed"
    assert b"Nothing to rate now" in rater_client.get(reverse("ratings:rate")).content

    researcher_client.post(url, {"status": "open"})
    campaign.refresh_from_db()
    assert campaign.status == "open"
    assert b'id="task"' in rater_client.get(reverse("ratings:rate")).content


def test_a_campaign_without_items_is_not_opened(researcher_client):
    campaign = make_campaign(prompts=2, status=Campaign.Status.GENERATING)
    Item.objects.filter(campaign=campaign).delete()

    response = researcher_client.post(
        reverse("ratings:status", args=[campaign.pk]), {"status": "open"}, follow=True
    )

    assert "no items" in [str(m) for m in response.context["messages"]][0]
    campaign.refresh_from_db()
    assert campaign.status == "generating"


def test_only_a_generated_campaign_resumes_its_answers(researcher_client):
    campaign = make_campaign(source=Campaign.Source.IMPORTED)

    response = researcher_client.post(
        reverse("ratings:resume", args=[campaign.pk]), follow=True
    )

    assert "Only a campaign whose answers are made here" in str(
        list(response.context["messages"])[0]
    )
    assert b"Resume answers" not in response.content


def test_answers_are_imported_from_an_upload(researcher_client):
    campaign = make_campaign(prompts=2, status=Campaign.Status.GENERATING)
    Item.objects.filter(campaign=campaign).delete()
    Answer.objects.filter(campaign=campaign).delete()
    lines = [
        {"prompt_id": f"p{i}", "model": model, "answer": f"{model} says {i}"}
        for i in range(2)
        for model in (MODEL, BASELINE)
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()

    response = researcher_client.post(
        reverse("ratings:import-answers", args=[campaign.pk]),
        {"file": upload("answers.jsonl", content)},
    )

    assert response.status_code == 302
    assert Answer.objects.filter(campaign=campaign).count() == 4
    assert Item.objects.filter(campaign=campaign).count() == 2


def test_a_bad_answers_file_lists_every_bad_line_and_saves_nothing(
    researcher_client,
):
    campaign = make_campaign(prompts=2)
    content = (
        b'{"prompt_id": "p0", "model": "m", "answer": "fine"}\n'
        b'{"prompt_id": "nope", "model": "m", "answer": "x"}\n'
        b"{broken\n"
        b'{"prompt_id": "p1", "model": "", "answer": "x"}\n'
        b'{"prompt_id": "p1", "model": "m", "answer": "a\\u0000b"}\n'
        b'{"prompt_id": "p1", "model": "m", "answer": "\\ud800"}\n'
    )

    response = researcher_client.post(
        reverse("ratings:import-answers", args=[campaign.pk]),
        {"file": upload("answers.jsonl", content)},
    )

    assert response.status_code == 400
    bad = response.context["answers_form"].bad_file
    assert [(e.line, e.field) for e in bad.errors] == [
        (2, "prompt_id"),
        (3, ""),
        (4, "model"),
        (5, ""),
        (6, ""),
    ]
    html = response.content.decode()
    assert "5 bad lines; nothing was saved." in html
    assert "holds a NUL character" in html and "holds a lone surrogate" in html
    assert "no such prompt in the campaign" in html
    assert not Answer.objects.filter(campaign=campaign, model="m").exists()


def test_the_export_downloads_preference_pairs(researcher_client):
    campaign = make_campaign("exported", prompts=3, ratings_per_item=2)
    rate_all(campaign, "alice", choice=1)
    rate_all(campaign, "bob", choice=4)  # ties
    url = reverse("ratings:export", args=[campaign.pk])

    dropped = researcher_client.get(url, {"ties": "drop", "per": "rating"})
    labelled = researcher_client.get(url, {"ties": "label", "per": "rating"})
    majority = researcher_client.get(url, {"ties": "drop", "per": "majority"})
    refused = researcher_client.get(url, {"ties": "maybe"})

    assert dropped["Content-Disposition"] == (
        'attachment; filename="exported-preferences.jsonl"'
    )

    def lines(response):
        content = b"".join(response.streaming_content)
        return [json.loads(line) for line in content.splitlines()]

    assert len(lines(dropped)) == 3
    assert sum("label" in line for line in lines(labelled)) == 3
    assert [line["ratings"] for line in lines(majority)] == [2, 2, 2]
    assert refused.status_code == 302


# --- prompt sets ----------------------------------------------------------------------


def test_prompt_sets_are_listed_with_counts(researcher_client):
    make_prompt_set("listed", prompts=5, categories=("a", "b"))

    response = researcher_client.get(PROMPT_SETS)

    row = next(s for s in response.context["prompt_sets"] if s.name == "listed")
    assert (row.prompt_count, row.category_count) == (5, 2)
    assert b"instruction" in response.content  # the built-in sets too


@pytest.mark.parametrize(
    "name, content",
    [
        (
            "new.jsonl",
            b'{"id": "x1", "prompt": "Write a haiku.", "category": "poetry"}\n'
            b'{"prompt": "Sort a list in Python.", "category": "coding",'
            b' "tags": ["python"]}\n',
        ),
        (
            "new.csv",
            b"id,prompt,category,tags\n"
            b"x1,Write a haiku.,poetry,\n"
            b'2,"Sort a list, in Python.",coding,python\n',
        ),
    ],
)
def test_a_prompt_file_is_uploaded_into_a_set(
    researcher, researcher_client, name, content
):
    response = researcher_client.post(
        PROMPT_SETS, {"set_name": "uploaded", "file": upload(name, content)}
    )

    prompt_set = PromptSet.objects.get(name="uploaded")
    assert response["Location"] == reverse("ratings:prompt-set", args=[prompt_set.pk])
    prompts = list(prompt_set.prompts.order_by("pk"))
    assert [(p.external_id, p.category) for p in prompts] == [
        ("x1", "poetry"),
        ("2", "coding"),
    ]
    assert prompts[1].tags == ["python"] and prompt_set.created_by == researcher
    detail = researcher_client.get(response["Location"])
    assert list(detail.context["categories"]) == [
        {"category": "coding", "count": 1},
        {"category": "poetry", "count": 1},
    ]


def test_a_bad_prompt_file_lists_every_bad_line_and_saves_nothing(researcher_client):
    response = researcher_client.post(
        PROMPT_SETS, {"set_name": "bad", "file": upload("bad.jsonl", BAD_PROMPTS)}
    )

    assert response.status_code == 400
    errors = response.context["form"].bad_file.errors
    assert [(e.line, e.field) for e in errors] == [
        (2, "prompt"),
        (3, ""),
        (4, "id"),
        (4, "category"),
        (5, ""),
    ]
    html = response.content.decode()
    assert "5 bad lines; nothing was saved." in html
    assert "empty prompt" in html and "duplicate id (also line 1)" in html
    assert not PromptSet.objects.filter(name="bad").exists()
    assert not Prompt.objects.filter(external_id="a").exists()


# --- admin ----------------------------------------------------------------------------


@pytest.fixture
def admin_client_(db) -> Client:
    return logged_in(make_user("ada", is_staff=True, is_superuser=True))


def test_the_admin_lists_every_ratings_model(admin_client_):
    campaign = make_campaign(prompts=2, ratings_per_item=1)
    rate_all(campaign, "alice")
    for model in (
        "promptset",
        "prompt",
        "campaign",
        "answer",
        "item",
        "rater",
        "assignment",
        "rating",
    ):
        response = admin_client_.get(reverse(f"admin:ratings_{model}_changelist"))
        assert response.status_code == 200, model
    changelist = admin_client_.get(reverse("admin:ratings_promptset_changelist"))
    assert reverse("admin:ratings_promptset_import").encode() in changelist.content


def test_the_admin_imports_prompts_and_shows_bad_lines(admin_client_):
    url = reverse("admin:ratings_promptset_import")
    good = b'{"prompt": "Hello?", "category": "chat"}\n'

    refused = admin_client_.post(
        url, {"set_name": "admin set", "file": upload("bad.jsonl", BAD_PROMPTS)}
    )
    accepted = admin_client_.post(
        url, {"set_name": "admin set", "file": upload("good.jsonl", good)}
    )

    assert refused.status_code == 400
    assert "5 bad lines; nothing was saved." in refused.content.decode()
    prompt_set = PromptSet.objects.get(name="admin set")
    assert accepted["Location"] == reverse(
        "admin:ratings_promptset_change", args=[prompt_set.pk]
    )
    assert [p.text for p in prompt_set.prompts.all()] == ["Hello?"]


def test_the_admin_import_needs_the_add_permission(db):
    staff = logged_in(make_user("stan", is_staff=True))
    response = staff.post(
        reverse("admin:ratings_promptset_import"),
        {"set_name": "s", "file": upload("p.jsonl", io.BytesIO(b"").read())},
    )
    assert response.status_code == 403
    assert not PromptSet.objects.filter(name="s").exists()
