"""A training run on a training worker: claimed once, its metrics saved and sent to
its page step by step, stopped at the next step when cancelled, and resumed from its
last checkpoint after a crash.

`execute` is what the Celery task `training.tasks.run_training` calls. The training
itself is `training.jobs.run`, which resumes from the run's output directory by
itself; here is only the bookkeeping around it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.utils import timezone

from webapp.core.channel_layer import send_to_group
from webapp.runs.models import Metric, Run

log = logging.getLogger(__name__)

LOG_LINES = 400  # the run page shows the latest lines of its log


def run_group(run_id: int) -> str:
    """The channel-layer group of the pages open on a run."""
    return f"runs.run.{run_id}"


def notify(run_id: int, event: dict[str, Any]) -> None:
    send_to_group(run_group(run_id), event)


def append_log(run_id: int, line: str) -> None:
    run = Run.objects.only("log").get(pk=run_id)
    lines = [*run.log.splitlines(), f"{timezone.now():%H:%M:%S} {line}"]
    Run.objects.filter(pk=run_id).update(log="\n".join(lines[-LOG_LINES:]))


def _line(record: dict[str, Any]) -> str:
    shown = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in record.items()
        if k != "step"
    )
    return f"step {record.get('step')}: {shown}"


def execute(run_id: int, worker: str) -> None:
    """Runs a queued run to its end (or its stop), once: a second delivery of the same
    task finds it claimed and returns."""
    from training import jobs
    from training.config import ConfigError
    from training.data import DataError
    from training.loop import TrainingDiverged

    claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
        status=Run.Status.RUNNING,
        worker=worker,
        worker_pid=os.getpid(),
        started_at=timezone.now(),
        error="",
    )
    if not claimed and not _take_over(run_id, worker):
        return
    run = Run.objects.get(pk=run_id)
    append_log(run_id, f"started on {worker} (resumes from its last checkpoint)")
    notify(run_id, {"type": "run.status", "status": run.status})

    def on_metrics(record: dict[str, Any]) -> None:
        if "status" in record:
            return  # the final record: saved below
        Metric.objects.create(run_id=run_id, step=record["step"], values=record)
        Run.objects.filter(pk=run_id).update(step=record["step"])
        append_log(run_id, _line(record))
        notify(run_id, {"type": "run.metrics", "record": record})

    def should_stop() -> bool:
        return Run.objects.filter(pk=run_id, cancel_requested=True).exists()

    try:
        final = jobs.run(
            run.kind, run.config, on_metrics=on_metrics, should_stop=should_stop
        )
    except (ConfigError, DataError, TrainingDiverged) as exc:
        end(run_id, Run.Status.FAILED, error=str(exc))
        return
    except Exception as exc:
        log.exception("run %s failed", run_id)
        end(run_id, Run.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    status = Run.Status.STOPPED if final["status"] == "stopped" else Run.Status.FINISHED
    end(run_id, status, final=final)


def _take_over(run_id: int, worker: str) -> bool:
    """Claims a run that a process of this same worker was running and that has died
    (the kernel's out-of-memory killer takes the pool's process, not the worker):
    Celery delivers its task again, to the process the pool starts in its place."""
    run = Run.objects.filter(
        pk=run_id, status=Run.Status.RUNNING, worker=worker
    ).first()
    if run is None or run.worker_pid is None or _alive(run.worker_pid):
        return False
    # Only if no one else took it meanwhile (the same pid still on record).
    return bool(
        Run.objects.filter(
            pk=run_id, status=Run.Status.RUNNING, worker_pid=run.worker_pid
        ).update(worker_pid=os.getpid(), started_at=timezone.now())
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def end(run_id: int, status: str, **fields: Any) -> None:
    Run.objects.filter(pk=run_id).update(
        status=status, finished_at=timezone.now(), cancel_requested=False, **fields
    )
    append_log(run_id, f"{status}: {fields.get('error') or fields.get('final', '')}")
    notify(run_id, {"type": "run.status", "status": status})


def requeue_orphans(worker: str) -> list[int]:
    """Runs this worker was running when it died: queued again, to resume from their
    last checkpoint (a training worker calls this when it starts)."""
    from training.tasks import run_training

    orphans = list(
        Run.objects.filter(status=Run.Status.RUNNING, worker=worker).values_list(
            "pk", flat=True
        )
    )
    for run_id in orphans:
        if Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(
            status=Run.Status.QUEUED
        ):
            append_log(run_id, f"{worker} restarted: resuming")
            run_training.delay(run_id)
    return orphans
