"""Celery tasks of the dashboards, on the default queue: after ratings arrive, a
worker computes the campaign's numbers and its page, so that the next view reads them
from the cache (`live.refresh_soon` asks for it)."""

from celery import shared_task
from django.core.cache import cache

from webapp.evals import reports, views
from webapp.ratings.models import Campaign

# Longer than a computation of the largest campaign: a worker killed in the middle
# holds the campaign no longer than this.
REFRESH_LOCK_SECONDS = 300
# Rounds one worker computes while ratings keep arriving under it.
REFRESH_ROUNDS = 3


@shared_task(ignore_result=True)
def refresh_campaign(campaign_id: int) -> None:
    """Computes the campaign's numbers for its ratings as they are now, unless
    another worker is at it: that one looks again when it is done, and computes once
    more if ratings arrived meanwhile. Safe to run twice: a version of the ratings
    always gives the same numbers."""
    lock = f"evals:refreshing:{campaign_id}"
    if not cache.add(lock, True, REFRESH_LOCK_SECONDS):
        return
    try:
        campaign = Campaign.objects.filter(pk=campaign_id).first()
        for _ in range(REFRESH_ROUNDS if campaign else 0):
            version = reports.campaign_version(campaign)
            views.numbers_html(campaign, version)
            if reports.campaign_version(campaign) == version:
                break
    finally:
        cache.delete(lock)
