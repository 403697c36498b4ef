"""The Celery app: configured from Django settings (the CELERY_* names).

Start a worker with `celery -A webapp worker -Q default,generation` (add `training` on
hosts with an accelerator). A worker that consumes `generation` also runs the chat's
answer persister (`webapp.chat.persister`) beside its tasks.
"""

import os

from celery import Celery, bootsteps, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The tasks.py of every Django app, and training/tasks.py, the training package's edge.
app.autodiscover_tasks()
app.autodiscover_tasks(["training"])


class AnswerPersisterStep(bootsteps.StartStopStep):
    """Runs the chat's answer persister in a worker that consumes `generation`."""

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.persister = None

    def start(self, worker) -> None:
        if "generation" not in worker.app.amqp.queues.consume_from:
            return
        from django.conf import settings  # set up by now: the worker loaded Django

        from webapp.chat.persister import Persister

        self.persister = Persister(
            settings.REDIS_URL, f"{worker.hostname}-{os.getpid()}"
        )
        self.persister.start()

    def stop(self, worker) -> None:
        if self.persister is not None:
            self.persister.stop()
            self.persister = None


app.steps["worker"].add(AnswerPersisterStep)


@signals.worker_ready.connect
def resume_training_runs(sender, **kwargs) -> None:
    """A training worker that starts (again) re-queues the runs it was running."""
    if "training" in sender.app.amqp.queues.consume_from:
        from webapp.runs.execution import requeue_orphans

        requeue_orphans(sender.hostname)
