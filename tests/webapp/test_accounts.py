"""Login, logout, the researcher-only pages and the demo users."""

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.http import HttpResponse
from django.test import RequestFactory
from django.views import View

from webapp.accounts.access import ResearcherRequiredMixin

pytestmark = pytest.mark.django_db


def test_it_sends_anonymous_people_to_the_login_page(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_it_sends_anonymous_people_from_researcher_pages_to_login(client):
    response = client.get("/status/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_shows_the_login_page_to_anonymous_people(client):
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_it_logs_in_with_the_right_password(client, rater):
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw", "next": "/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_it_rejects_a_wrong_password(client, rater):
    response = client.post("/accounts/login/", {"username": "alice", "password": "no"})

    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert client.get("/").status_code == 302


def test_it_logs_out_on_post(rater_client):
    response = rater_client.post("/accounts/logout/")

    assert response.status_code == 302
    assert rater_client.get("/").status_code == 302


def test_it_forbids_researcher_pages_to_raters(rater_client):
    response = rater_client.get("/status/")

    assert response.status_code == 403


def test_it_forbids_researcher_pages_to_people_in_no_group(stranger_client):
    response = stranger_client.get("/status/")

    assert response.status_code == 403


def test_it_opens_researcher_pages_to_researchers(researcher_client):
    response = researcher_client.get("/status/")

    assert response.status_code == 200
    assert b"System status" in response.content


def test_it_opens_researcher_pages_to_staff(stranger, stranger_client):
    stranger.is_staff = True
    stranger.save()

    response = stranger_client.get("/status/")

    assert response.status_code == 200


class ResearchersOnly(ResearcherRequiredMixin, View):
    def get(self, request):
        return HttpResponse("secret")


@pytest.mark.parametrize(
    ("persona", "expected"), [("rater", 403), ("researcher", 200), (None, 302)]
)
def test_the_mixin_guards_class_based_views(request, persona, expected):
    http_request = RequestFactory().get("/secret/")
    http_request.user = request.getfixturevalue(persona) if persona else AnonymousUser()
    try:
        status = ResearchersOnly.as_view()(http_request).status_code
    except PermissionDenied:
        status = 403

    assert status == expected


def test_it_creates_the_demo_users_once(capsys):
    call_command("create_demo_users")
    call_command("create_demo_users")

    out = capsys.readouterr().out
    assert "username 'researcher' password 'researcher-demo' (created)" in out
    assert "username 'rater' password 'rater-demo' (exists, password unchanged)" in out
    researcher = User.objects.get(username="researcher")
    assert researcher.check_password("researcher-demo")
    assert list(researcher.groups.values_list("name", flat=True)) == ["researcher"]
    assert list(
        User.objects.get(username="rater").groups.values_list("name", flat=True)
    ) == ["rater"]
    assert User.objects.count() == 2
