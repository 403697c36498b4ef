"""Celery tasks of the ratings app: answer jobs run on the `generation` queue, beside
the generation workers they wait on; a judge, which holds a model itself, on the
`training` queue (see CELERY_TASK_ROUTES)."""

from celery import shared_task

from webapp.ratings import answer_jobs


@shared_task(ignore_result=True)
def generate_answers(campaign_id: int) -> None:
    """Makes a campaign's missing answers and opens it; running it twice, or again
    after it was killed, makes no answer twice."""
    answer_jobs.generate_answers(campaign_id)


@shared_task(ignore_result=True)
def judge_campaign(campaign_id: int, model_name: str) -> None:
    """A model rates a campaign as a judge (routed to the training queue: it loads the
    model in the worker's own process)."""
    from webapp.ratings.judging import judge_campaign as rate
    from webapp.ratings.models import Campaign

    rate(Campaign.objects.get(pk=campaign_id), model_name)
