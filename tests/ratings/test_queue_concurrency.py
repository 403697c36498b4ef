"""64 raters at once, each in its own thread and database connection: no item is
over-assigned, nobody rates an item twice, and no rating is lost. Against PostgreSQL
when the session uses it (CI=true: `FOR UPDATE SKIP LOCKED`), else SQLite."""

import threading
from collections import Counter

import pytest
from django.db import connection

from tests.conftest import make_user
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER
from webapp.ratings import queue
from webapp.ratings.models import Item, Rating

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RATERS = 64
ITEMS = 40
K = 3


def test_many_raters_at_once_never_over_assign_duplicate_or_lose():
    make_campaign(prompts=ITEMS, ratings_per_item=K)
    raters = [queue.rater_for(make_user(f"r{i}", RATER)) for i in range(RATERS)]
    accepted: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(RATERS)

    def work(rater) -> None:
        try:
            start.wait()
            while (task := queue.next_task(rater)) is not None:
                rating = queue.submit(rater, task.token, queue.Verdict(choice=2))
                accepted.append(rating.pk)
        except BaseException as error:  # reported below, with the vendor
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [], (connection.vendor, errors[:3])
    per_item = Counter(Rating.objects.values_list("item_id", flat=True))
    assert len(per_item) == ITEMS
    assert max(per_item.values()) == K  # never over-assigned
    assert sum(per_item.values()) == ITEMS * K  # every place filled
    pairs = Counter(Rating.objects.values_list("item_id", "rater_id"))
    assert max(pairs.values()) == 1  # nobody rated an item twice
    assert sorted(accepted) == sorted(Rating.objects.values_list("pk", flat=True))
    assert all(i.taken == i.rated == K for i in Item.objects.all())
