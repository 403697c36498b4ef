"""A real Celery worker process runs a task end to end over the session's Redis."""

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from webapp.celery import app as celery_app
from webapp.core.tasks import clear_expired_sessions


def make_session(expires_in: timedelta) -> str:
    store = SessionStore()
    store.create()
    Session.objects.filter(session_key=store.session_key).update(
        expire_date=timezone.now() + expires_in
    )
    return store.session_key


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_a_task_against_the_test_database(live_celery_worker):
    expired = make_session(timedelta(days=-1))
    current = make_session(timedelta(days=1))

    deleted = clear_expired_sessions.delay().get(timeout=60)

    assert deleted == 1
    assert not Session.objects.filter(session_key=expired).exists()
    assert Session.objects.filter(session_key=current).exists()


def test_tasks_are_routed_to_their_queues():
    router = celery_app.amqp.router

    def queue_of(task_name: str) -> str:
        return router.route({}, task_name)["queue"].name

    assert queue_of("training.tasks.run_training") == "training"
    assert queue_of("webapp.ratings.tasks.generate_answers") == "generation"
    assert queue_of("webapp.core.tasks.clear_expired_sessions") == "default"
