"""The rater's page, `/rate/`, with personas: a rater, a second rater, a researcher,
a stranger and an anonymous visitor."""

import datetime
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import logged_in, make_user
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER, RESEARCHER
from webapp.ratings import queue
from webapp.ratings.models import Assignment, Rating

pytestmark = pytest.mark.django_db

RATE = reverse("ratings:rate")
XSS = (
    "<script>alert(1)</script>\n\n"
    '<img src=x onerror="alert(2)">\n\n'
    "[click](javascript:alert(3))"
)


class Elements(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))


def assert_inert(html: str) -> None:
    """No image, no inline script, no event handler, no `javascript:` link."""
    elements = Elements(html).found
    assert not [attrs for tag, attrs in elements if tag == "img"]
    assert all(attrs.get("src") for tag, attrs in elements if tag == "script")
    for _tag, attrs in elements:
        assert not [name for name in attrs if name.startswith("on")]
        assert not attrs.get("href", "").strip().lower().startswith("javascript:")


def answer_url(task: Assignment) -> str:
    return reverse("ratings:answer", args=[task.token])


def current_task(user) -> Assignment:
    return Assignment.objects.get(rater__user=user, status=Assignment.Status.LEASED)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_anonymous_people_are_sent_to_login(db):
    make_campaign()
    response = Client().get(RATE)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert not Assignment.objects.exists()


def test_only_raters_open_the_page(researcher_client, stranger_client):
    make_campaign()
    assert researcher_client.get(RATE).status_code == 403
    assert stranger_client.get(RATE).status_code == 403
    assert not Assignment.objects.exists()


def test_it_shows_the_next_task_as_markdown_with_its_conversation(rater, rater_client):
    campaign = make_campaign(guidelines="Prefer **correct** answers.")
    campaign.prompt_set.prompts.update(
        history=[
            {"role": "user", "content": "Earlier *question*"},
            {"role": "model", "content": "Earlier answer"},
        ]
    )

    response = rater_client.get(RATE)

    assert response.status_code == 200
    task = current_task(rater)
    html = response.content.decode()
    left, right = (
        (task.item.answer_a, task.item.answer_b)
        if task.left == "a"
        else (task.item.answer_b, task.item.answer_a)
    )
    assert html.index(left.text) < html.index(right.text)
    assert task.item.prompt.text in html
    assert "<em>question</em>" in html and "Earlier answer" in html
    assert "Prefer <strong>correct</strong> answers." in html
    assert f'action="{answer_url(task)}"' in html
    for label in queue.CHOICES.values():
        assert label in html


def test_the_same_task_is_shown_until_it_is_answered(rater, rater_client):
    make_campaign()
    rater_client.get(RATE)
    first = current_task(rater)
    rater_client.get(RATE)
    assert Assignment.objects.get().pk == first.pk


def test_a_verdict_is_stored_from_answer_as_side_and_the_next_task_follows(
    rater, rater_client
):
    make_campaign(prompts=2, ratings_per_item=1)
    rater_client.get(RATE)
    task = current_task(rater)

    response = rater_client.post(
        answer_url(task),
        {
            "choice": "2",
            "both_bad": "on",
            "unsafe_right": "on",
            "rationale": "  Left is clearer.  ",
            "active_seconds": "12.5",
        },
    )

    assert response.status_code == 302 and response["Location"] == RATE
    rating = Rating.objects.get()
    # 2 = left better: +2 for A if A was shown left, -2 if it was shown right.
    assert rating.score == (2 if task.left == "a" else -2)
    assert rating.both_bad
    assert (rating.unsafe_a, rating.unsafe_b) == (
        (False, True) if task.left == "a" else (True, False)
    )
    assert (rating.rationale, rating.active_seconds) == ("Left is clearer.", 12.5)
    page = rater_client.get(RATE)
    assert messages_of(page) == ["Saved."]
    assert current_task(rater).pk != task.pk


def test_a_skip_gives_the_task_back_with_its_reason(rater, rater_client):
    make_campaign(prompts=1)
    rater_client.get(RATE)
    task = current_task(rater)

    response = rater_client.post(
        answer_url(task), {"action": "skip", "reason": "offensive"}
    )

    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.status, task.skip_reason) == ("skipped", "offensive")
    assert not Rating.objects.exists()
    page = rater_client.get(RATE)
    assert b"Nothing to rate now" in page.content


def test_bad_input_shows_why_and_changes_nothing(rater, rater_client):
    make_campaign()
    rater_client.get(RATE)
    task = current_task(rater)

    no_choice = rater_client.post(answer_url(task), {"rationale": "hm"}, follow=True)
    no_reason = rater_client.post(answer_url(task), {"action": "skip"}, follow=True)

    assert messages_of(no_choice) == ["choice: Choose one of the 7 points (1 to 7)."]
    assert messages_of(no_reason) == ["reason: Give one of the skip reasons."]
    task.refresh_from_db()
    assert task.status == Assignment.Status.LEASED
    assert not Rating.objects.exists()


def test_a_refused_submit_shows_its_message_and_changes_nothing(rater, rater_client):
    make_campaign()
    bob = logged_in(make_user("bob", RATER))
    rater_client.get(RATE)
    task = current_task(rater)

    theirs = bob.post(answer_url(task), {"choice": "1"}, follow=True)
    Assignment.objects.filter(pk=task.pk).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    expired = rater_client.post(answer_url(task), {"choice": "1"}, follow=True)

    assert "This task is not yours." in messages_of(theirs)
    assert "ran out" in messages_of(expired)[0]
    assert not Rating.objects.exists()
    task.refresh_from_db()
    assert task.status == Assignment.Status.EXPIRED


def test_only_raters_can_post_a_verdict(rater, rater_client, researcher_client):
    make_campaign()
    rater_client.get(RATE)
    task = current_task(rater)

    assert researcher_client.post(answer_url(task), {"choice": "1"}).status_code == 403
    assert Client().post(answer_url(task), {"choice": "1"}).status_code == 302
    assert not Rating.objects.exists()


def test_nothing_to_rate_is_said_kindly(rater_client):
    response = rater_client.get(RATE)
    assert response.status_code == 200
    assert b"Nothing to rate now" in response.content
    assert b'id="task"' not in response.content


def test_the_page_runs_a_fixed_number_of_queries(
    rater, rater_client, django_assert_num_queries
):
    make_campaign(prompts=3)
    rater_client.get(RATE)  # the lease is taken; then the page only shows it
    # session, user, roles (the page's guard, then the header's links), rater, stale
    # leases, the current lease, its item with prompt, answers and campaign
    with django_assert_num_queries(8):
        rater_client.get(RATE)
    queue.submit(queue.rater_for(rater), current_task(rater).token, queue.Verdict(4))
    # a new lease: open campaigns and the rater's ratings today, the candidate item,
    # taking its place, the balance of sides and the new assignment (in savepoints)
    with django_assert_num_queries(18):
        rater_client.get(RATE)


def test_model_html_in_prompts_answers_and_guidelines_stays_text(rater_client):
    campaign = make_campaign(prompts=1, guidelines=XSS)
    campaign.prompt_set.prompts.update(text=XSS)
    campaign.answers.update(text=XSS)

    html = rater_client.get(RATE).content.decode()

    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4  # shown as text
    assert_inert(html)


def test_the_header_links_each_role_to_its_pages(
    rater_client, researcher_client, stranger_client
):
    rate_link = f'href="{RATE}"'
    campaigns_link = f'href="{reverse("ratings:campaigns")}"'
    rater_home = rater_client.get("/").content.decode()
    researcher_home = researcher_client.get("/").content.decode()
    stranger_home = stranger_client.get("/").content.decode()

    assert rate_link in rater_home and campaigns_link not in rater_home
    assert campaigns_link in researcher_home and rate_link not in researcher_home
    assert rate_link not in stranger_home and campaigns_link not in stranger_home
    both = logged_in(make_user("rita", RATER, RESEARCHER)).get("/").content.decode()
    assert rate_link in both and campaigns_link in both
