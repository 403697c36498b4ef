"""The whole loop on tiny-random with real workers: SFT, a campaign of the initial
policy against itself, simulated raters through the queue, a reward model, REINFORCE
with a KL term, the policy registered and served, an evaluation campaign rated again.
`manage.py demo_loop` runs it; its last line must meet the issue's goals."""

import importlib
import io
import json
import sys
import uuid

import pytest
from django.apps import apps
from django.core.management import call_command

from model_service import protocol
from model_service.client import GenerationClient
from tests.conftest import start_training_worker, wait_until, worker_env
from webapp.launcher import spawn, stop
from webapp.runs.models import CatalogModel

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fresh_database():
    """The built-in prompt sets, as migrations leave a fresh database (an earlier
    transactional test may have flushed them)."""
    builtin = importlib.import_module(
        "webapp.ratings.migrations.0002_builtin_prompt_sets"
    )
    builtin.load(apps, schema_editor=None)


@pytest.fixture
def catalog_worker(redis_url):
    """A generation worker that serves what the loop registers, as it appears."""
    worker_id = f"test-loop-{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable, "-m", "model_service.worker", "--redis-url", redis_url,
        "--catalog", "--worker-id", worker_id,
    ]  # fmt: skip
    process = spawn(command, env=worker_env())
    client = GenerationClient(redis_url)
    wait_until(lambda: worker_id in client.alive_workers(), process, "catalog worker")
    yield
    stop(process)
    if names := list(CatalogModel.objects.values_list("name", flat=True)):
        client.redis.hdel(protocol.CATALOG_KEY, *names)
    client.close()


@pytest.fixture
def training_worker(settings, tmp_path):
    settings.RUNS_DIR = tmp_path / "runs"
    process = start_training_worker(f"loop-{uuid.uuid4().hex[:6]}@localhost")
    yield
    stop(process)


@pytest.mark.timeout(1800)
def test_the_loop_makes_a_policy_that_wins_within_its_kl_budget(
    fresh_database, generation_worker, live_celery_worker, catalog_worker,
    training_worker,
):  # fmt: skip
    out = io.StringIO()
    # A budget of 10 tokens leaves the initial policy ending about a quarter of its
    # answers (at 16 about half, and ties with it cap the win rate near 0.75); eight
    # prompts a step keep REINFORCE from drifting into empty answers. Both built-in
    # sets' 324 prompts, every one rated: with 210 (and 400 ratings, the raters'
    # default cap) the reward model was held out on about 18 distinct pairs, each
    # miss 5.5 points, and two CI runs fell under 0.9 (0.83 at lr 3e-3, 0.89 at 1e-3).
    call_command(
        "demo_loop", "--model", "tiny-random", "--sft-steps", "40",
        "--prompts", "324", "--raters", "2", "--max-new-tokens", "10",
        "--rm-steps", "100", "--rm-learning-rate", "3e-3", "--rl-steps", "60",
        "--rl-prompts-per-step", "8", "--target-kl", "6", "--json",
        stdout=out,
    )  # fmt: skip
    result = json.loads(out.getvalue().splitlines()[-1])
    print(result)  # the figures, in the log of a passing run too

    assert result["rm_eval_accuracy"] >= 0.9, result
    assert result["policy_win_rate"] >= 0.65, result
    assert result["ci_low"] > 0.5, result
    assert result["kl"] <= result["target_kl"], result
