"""Playwright with Debian's Chromium, against one live server and workers per session.

Screenshots go to `test-artifacts/browser/` (git-ignored), one per step worth seeing.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import make_user

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pw"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture(scope="module", autouse=True)
def orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an event loop running on this thread, which makes
    Django refuse ORM calls; these tests are synchronous, so allow them, for this
    module only. Set up before the (module-scoped) browser, torn down after it."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=live_url)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def user(transactional_db):
    user = make_user("olga")
    # The server process keeps Django's default hashers (the session's fast MD5 is
    # set in this process only), so the password is hashed with one it knows.
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(PASSWORD, hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])
    return user


@pytest.fixture
def logged_in_page(page: Page, user) -> Page:
    page.goto("/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    return page


@pytest.fixture
def screenshot(request, page: Page):
    """`screenshot("step")` saves test-artifacts/browser/<test>-<step>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(step: str) -> None:
        page.screenshot(
            path=ARTIFACTS / f"{request.node.name}-{step}.png", full_page=True
        )

    return take
