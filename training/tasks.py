"""The Celery edge of `training`: the one module of the package that reaches the web
app (lazily, so importing it brings no Django). Tasks run on the `training` queue,
which only training workers consume (prefork, one task at a time).

`acks_late` with `reject_on_worker_lost`: a task whose worker dies is not lost, and
a training worker that starts again re-queues the runs it was running
(`webapp.celery`), which resume from their last checkpoint.
"""

from celery import shared_task


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_training(self, run_id: int) -> None:
    """Runs (or resumes) a training run of the site; a second delivery is a no-op."""
    from webapp.runs.execution import execute

    execute(run_id, worker=self.request.hostname)
