"""Celery tasks of the chat; `webapp.chat.tasks.*` runs on the `generation` queue."""

from celery import shared_task

from webapp.chat.generation import run_answer


# Nobody reads the result (the answer row is the result): no result-backend round trips.
@shared_task(ignore_result=True)
def generate_answer(answer_id: int) -> None:
    """Saves one submitted answer as it is generated, and its end; running it twice is
    harmless (the first run claims it)."""
    run_answer(answer_id)
