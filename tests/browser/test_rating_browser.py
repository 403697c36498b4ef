"""The rater page in a real Chromium, driven by the keyboard alone."""

import datetime

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER
from webapp.ratings.models import Answer, Assignment, Rating
from webapp.ratings.queue import score_for_a

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

# Short answers: reading both takes the least time the page asks for, 2 s.
ANSWER = "Here is **one** way:\n\n1. a step\n2. another `step`\n\n"
XSS = '<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2">'
READ_MS = 2300  # longer than the 2 s that reading both answers takes
START = datetime.datetime(2030, 1, 1, 8, 0)
# The tab hidden or shown again, as the Page Visibility API tells the page.
SET_HIDDEN = """(hidden) => {
  Object.defineProperty(document, "visibilityState", {
    configurable: true, get: () => (hidden ? "hidden" : "visible"),
  });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.fixture
def rater_page(user, logged_in_page: Page) -> Page:
    user.groups.add(Group.objects.get_or_create(name=RATER)[0])
    campaign = make_campaign(
        "keyboard",
        prompts=5,
        ratings_per_item=1,
        guidelines="## How to judge\n\nPrefer the answer that **helps** most.",
    )
    campaign.prompt_set.prompts.update(text="Explain *sorting* in two steps.")
    for number, answer in enumerate(Answer.objects.filter(campaign=campaign)):
        extra = XSS if number == 0 else f"Answer {number}."
        Answer.objects.filter(pk=answer.pk).update(text=ANSWER + extra)
    # The page's time stands still but when the test moves it (reading, idling), so
    # that active seconds are exact.
    logged_in_page.clock.install(time=START)
    logged_in_page.goto("/rate/")
    logged_in_page.clock.pause_at(START + datetime.timedelta(hours=1))
    return logged_in_page


def shown_task(page: Page) -> Assignment:
    token = page.get_attribute("#task", "action").split("/")[2]
    return Assignment.objects.get(token=token)


def press(page: Page, *keys: str) -> None:
    for key in keys:
        page.keyboard.press(key)


def next_task(page: Page, task: Assignment) -> None:
    """Waits until the page shows another task (or none)."""
    action = f"/rate/{task.token}/"
    expect(page.locator(f'#task[action="{action}"]')).to_have_count(0)


def test_a_rater_rates_five_tasks_with_the_keyboard_only(rater_page: Page, screenshot):
    page = rater_page
    expect(page.locator("#answer-left")).to_contain_text("another step")
    assert page.evaluate("() => window.pwned") is None  # model HTML stayed text
    press(page, "?")
    expect(page.locator("#keys-help")).to_be_visible()
    press(page, "Escape")
    expect(page.locator("#keys-help")).to_be_hidden()

    # 1: a choice and "both are bad".
    first = shown_task(page)
    press(page, "2", "b")
    screenshot("task")
    page.clock.fast_forward(READ_MS)
    press(page, "Enter")
    next_task(page, first)

    # 2: the left answer is unsafe, the right one on and off again; 30 s in another
    # tab are not counted.
    second = shown_task(page)
    press(page, "6", "[", "]", "]")
    page.evaluate(SET_HIDDEN, True)
    page.clock.fast_forward(30_000)
    page.evaluate(SET_HIDDEN, False)
    page.clock.fast_forward(READ_MS)
    press(page, "Enter")
    next_task(page, second)

    # 3: a rationale, whose keys are text, not choices; 65 s idle are not counted.
    third = shown_task(page)
    press(page, "r")
    page.keyboard.type("Left has 2 bugs; see step b.")
    press(page, "Escape")
    page.clock.fast_forward(65_000)
    press(page, "5")
    page.clock.fast_forward(READ_MS)
    press(page, "Enter")
    next_task(page, third)

    # 4: a skip, with the second reason.
    fourth = shown_task(page)
    press(page, "s", "2")
    screenshot("skip")
    press(page, "Enter")
    next_task(page, fourth)

    # 5: too fast: asked to confirm; Escape goes back, Enter confirms.
    fifth = shown_task(page)
    press(page, "7")
    page.clock.fast_forward(500)
    press(page, "Enter")
    expect(page.locator("#too-fast")).to_be_visible()
    screenshot("too-fast")
    press(page, "Escape")
    expect(page.locator("#too-fast")).to_be_hidden()
    assert not Rating.objects.filter(assignment=fifth).exists()
    press(page, "Enter")
    expect(page.locator("#too-fast")).to_be_visible()
    press(page, "Enter")
    expect(page.get_by_text("Nothing to rate now")).to_be_visible()
    screenshot("done")

    def stored(task: Assignment, choice: int) -> Rating:
        rating = Rating.objects.get(assignment=task)
        assert rating.score == score_for_a(choice, task.left)
        assert rating.left == task.left
        return rating

    def unsafe(rating: Rating, left: bool, right: bool) -> bool:
        on_a, on_b = (left, right) if rating.left == "a" else (right, left)
        return (rating.unsafe_a, rating.unsafe_b) == (on_a, on_b)

    one = stored(first, 2)
    assert one.both_bad and unsafe(one, False, False) and one.rationale == ""
    assert one.active_seconds == READ_MS / 1000
    two = stored(second, 6)
    assert not two.both_bad and unsafe(two, True, False)
    assert two.active_seconds == READ_MS / 1000  # not the 30 s in another tab
    three = stored(third, 5)
    assert three.rationale == "Left has 2 bugs; see step b." and not three.both_bad
    assert three.active_seconds == READ_MS / 1000  # not the 65 s idle
    fourth.refresh_from_db()
    assert (fourth.status, fourth.skip_reason) == ("skipped", "broken")
    assert not Rating.objects.filter(assignment=fourth).exists()
    five = stored(fifth, 7)
    assert five.active_seconds == 0.5
    assert Rating.objects.count() == 4
