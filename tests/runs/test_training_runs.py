"""Training runs through the site's machinery and a real training worker (prefork,
one task at a time, on the `training` queue): a reward model trained, registered and
published to the catalog; a worker SIGKILLed mid-run resumes the run when it restarts,
and so does the process its pool starts when only the running one is killed; a
cancelled run stops at a step and resumes."""

import time
import uuid
from pathlib import Path

import psutil
import pytest

from model_service import protocol
from model_service.client import GenerationClient
from tests.conftest import start_training_worker
from webapp.launcher import stop
from webapp.runs import services
from webapp.runs.models import CatalogModel, Metric, Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PAIRS = Path(__file__).resolve().parents[2] / "training/data/preferences_colours.jsonl"
TIMEOUT_S = 300


def reward_model_settings(steps: int) -> dict:
    return {
        "model": "tiny-random",
        "steps": steps,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "max_length": 64,
        "eval_fraction": 0.2,
        "eval_every": steps,
        "checkpoint_every": 5,
        "seed": 0,
    }


def start(steps: int, name: str = "colours") -> Run:
    with PAIRS.open("rb") as source:
        return services.start_run(
            Run.Kind.REWARD_MODEL,
            name,
            reward_model_settings(steps),
            services.copy_data(source),
            data_source="colour preferences",
        )


def wait_for(run: Run, condition, what: str) -> Run:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition(fresh := Run.objects.get(pk=run.pk)):
        assert fresh.status != Run.Status.FAILED, fresh.error
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {fresh.log}"
        time.sleep(0.5)
    return fresh


@pytest.fixture
def runs_dir(settings, tmp_path):
    settings.RUNS_DIR = tmp_path / "runs"
    return settings.RUNS_DIR


@pytest.fixture
def training_worker(runs_dir):
    name = f"training-{uuid.uuid4().hex[:6]}@localhost"
    process = start_training_worker(name)
    yield name
    stop(process)


def test_a_reward_model_run_trains_registers_and_is_published(
    training_worker, redis_url
):
    run = start(steps=10)
    assert run.status == Run.Status.QUEUED
    assert Path(run.config["train_data"]).read_text() == PAIRS.read_text()

    run = wait_for(run, lambda r: r.status == Run.Status.FINISHED, "the run")
    assert run.worker == training_worker and run.step == 10
    assert 0 <= run.final["eval_accuracy"] <= 1
    assert Metric.objects.filter(run=run).count() == 10
    assert "loss" in Metric.objects.filter(run=run).last().values

    model = services.register(run, "colour-rm")
    assert model.kind == CatalogModel.Kind.REWARD_MODEL
    assert model.path == run.checkpoint and model.reward_std is not None
    client = GenerationClient(redis_url)
    try:
        entry = client.redis.hget(protocol.CATALOG_KEY, "colour-rm")
        assert entry == protocol.catalog_entry(run.checkpoint, "reward_model")
    finally:
        client.redis.hdel(protocol.CATALOG_KEY, "colour-rm")
        client.close()


def test_a_config_the_trainer_refuses_queues_nothing(runs_dir):
    with pytest.raises(Exception, match="learning_rate"):
        with PAIRS.open("rb") as source:
            services.start_run(
                Run.Kind.REWARD_MODEL,
                "bad",
                {**reward_model_settings(5), "learning_rate": 5},
                services.copy_data(source),
                data_source="colour preferences",
            )
    assert not Run.objects.exists()
    assert not list(Path(runs_dir).glob("*"))


def kill_tree(pid: int) -> None:
    for process in [*psutil.Process(pid).children(recursive=True), psutil.Process(pid)]:
        process.kill()


def test_a_killed_training_worker_resumes_its_run_when_it_restarts(runs_dir):
    name = f"training-{uuid.uuid4().hex[:6]}@localhost"
    worker = start_training_worker(name)
    run = start(steps=60)
    try:
        wait_for(run, lambda r: r.step >= 12, "a few steps")
    finally:
        kill_tree(worker.pid)  # the whole worker, pool child included
        worker.wait()
    assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING

    worker = start_training_worker(name)  # the same node starts again
    try:
        run = wait_for(run, lambda r: r.status == Run.Status.FINISHED, "the resume")
        # It went on from a checkpoint (every 5 steps), not from the start.
        steps = list(Metric.objects.filter(run=run).values_list("step", flat=True))
        assert steps.count(1) == 1 and run.step == 60
        assert "restarted: resuming" in run.log

        # A cancel stops it at a step; resuming goes on from there.
        again = start(steps=400, name="long")
        wait_for(again, lambda r: r.step >= 3, "the long run")
        services.cancel(again)
        stopped = wait_for(again, lambda r: r.status == Run.Status.STOPPED, "the stop")
        assert stopped.step < 400
    finally:
        stop(worker)


def test_a_run_whose_pool_process_is_killed_resumes_in_the_next_one(runs_dir):
    """As the kernel's out-of-memory killer does: the biggest process, the pool's
    training one, dies; the worker lives on and starts another."""
    worker = start_training_worker(f"training-{uuid.uuid4().hex[:6]}@localhost")
    run = start(steps=40)
    try:
        running = wait_for(run, lambda r: r.step >= 12, "a few steps")
        (pool_process,) = psutil.Process(worker.pid).children()
        assert running.worker_pid == pool_process.pid
        pool_process.kill()
        run = wait_for(run, lambda r: r.status == Run.Status.FINISHED, "the resume")
        steps = list(Metric.objects.filter(run=run).values_list("step", flat=True))
        assert steps.count(1) == 1 and run.step == 40  # from a checkpoint
        assert run.log.count("started on") == 2
    finally:
        stop(worker)
