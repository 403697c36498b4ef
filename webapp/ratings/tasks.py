"""Celery tasks of the ratings app; `webapp.ratings.tasks.*` runs on the `generation`
queue, beside the generation workers it waits on."""

from celery import shared_task

from webapp.ratings import answer_jobs


@shared_task(ignore_result=True)
def generate_answers(campaign_id: int) -> None:
    """Makes a campaign's missing answers and opens it; running it twice, or again
    after it was killed, makes no answer twice."""
    answer_jobs.generate_answers(campaign_id)
