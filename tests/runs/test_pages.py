"""The training pages (`/runs/`) and the catalog's (`/models/`) with personas: a
researcher, staff, a rater, a stranger and an anonymous visitor. Runs are set up in
the database in the state each test needs; nothing here needs a worker (the run a
form starts is seen queued after the commit, never sent)."""

import datetime
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from model_service import protocol
from model_service.checkpoints import flax_params
from model_service.registry import load_model
from tests.conftest import logged_in, make_user
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER
from webapp.core import serving
from webapp.ratings import queue
from webapp.runs import services, views
from webapp.runs.models import CatalogModel, Metric, Run

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PAIRS = ROOT / "training/data/preferences_colours.jsonl"
NEW = reverse("runs:run-create")
XSS = "<script>alert('x')</script>"
XSS_NAME = "<img src=x onerror=alert(1)>"  # a catalog name has no "/"


@pytest.fixture
def runs_dir(settings, tmp_path) -> Path:
    settings.RUNS_DIR = tmp_path / "runs"
    return settings.RUNS_DIR


def make_run(name: str = "run", status: str = Run.Status.FINISHED, **fields) -> Run:
    """A run as a worker would have left it, with an output directory of its own."""
    run = Run.objects.create(
        kind=fields.pop("kind", Run.Kind.SFT),
        name=name,
        status=status,
        config={"model": "tiny-random", "steps": 20, "output_dir": ""},
        steps=fields.pop("steps", 20),
        **fields,
    )
    output = services.run_directory(run) / "output"
    run.config["output_dir"] = str(output)
    run.save(update_fields=["config"])
    return run


def metric(run: Run, step: int, at: datetime.datetime | None = None, **values) -> None:
    row = Metric.objects.create(run=run, step=step, values={"step": step, **values})
    if at is not None:
        Metric.objects.filter(pk=row.pk).update(created_at=at)


def good_form(**changes) -> dict:
    form = {
        "name": "sft-demo",
        "kind": "sft",
        "model": "tiny-random",
        "data": "instructions",
        "steps": 30,
        "batch_size": 8,
        "learning_rate": 1e-4,
        "seed": 3,
        "max_length": 64,
        "warmup_steps": 5,
        "eval_every": 10,
        "checkpoint_every": 10,
        "mesh": "",
        "ties": "drop",
        "center_rewards_coefficient": "",
    }
    return {**form, **changes}


def page_urls(run: Run, model: CatalogModel) -> dict[str, str]:
    """Each page, by the method that opens it."""
    pk = run.pk
    return {
        reverse("runs:runs"): "get",
        NEW: "get",
        reverse("runs:run", args=[pk]): "get",
        reverse("runs:cancel", args=[pk]): "post",
        reverse("runs:resume", args=[pk]): "post",
        reverse("runs:delete", args=[pk]): "post",
        reverse("runs:register", args=[pk]): "post",
        reverse("runs:models"): "get",
        reverse("runs:model", args=[model.name]): "get",
    }


def catalog_model(name: str = "rm", **fields) -> CatalogModel:
    fields = {"kind": CatalogModel.Kind.REWARD_MODEL, "path": "tiny-random", **fields}
    return CatalogModel.objects.create(name=name, **fields)


# --- who may open them ----------------------------------------------------------------


def test_researchers_and_staff_open_every_page(researcher_client, runs_dir):
    run, model = make_run(), catalog_model()
    staff = logged_in(make_user("stan", is_staff=True))
    for client in (researcher_client, staff):
        for url, method in page_urls(run, model).items():
            if method == "get":
                assert client.get(url).status_code == 200, url


def test_raters_and_strangers_get_403_and_change_nothing(
    rater_client, stranger_client, runs_dir
):
    run, model = make_run(), catalog_model()
    for client in (rater_client, stranger_client):
        for url, method in page_urls(run, model).items():
            response = getattr(client, method)(url, {"name": "taken"})
            assert response.status_code == 403, url
        response = client.post(NEW, good_form())
        assert response.status_code == 403
        score = client.post(
            reverse("runs:api-score", args=[model.name]),
            {"prompt": "p", "answer": "a"},
            content_type="application/json",
        )
        assert score.status_code == 403
    assert list(Run.objects.values_list("pk", "status")) == [(run.pk, "finished")]
    assert list(CatalogModel.objects.values_list("name", flat=True)) == ["rm"]


def test_anonymous_people_are_sent_to_login(db, runs_dir):
    run, model = make_run(), catalog_model()
    for url in page_urls(run, model):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("accounts:login"))
    score = Client().post(
        reverse("runs:api-score", args=[model.name]), {}, "application/json"
    )
    assert score.status_code == 401


def test_the_header_links_to_training_and_models_for_researchers_only(
    researcher_client, rater_client
):
    links = (reverse("runs:runs"), reverse("runs:models"))
    home = reverse("chat:list")
    researcher_page = researcher_client.get(home).content.decode()
    rater_page = rater_client.get(home).content.decode()
    for link in links:
        assert f'href="{link}"' in researcher_page
        assert f'href="{link}"' not in rater_page


# --- the run list ---------------------------------------------------------------------


def test_the_list_filters_runs_newest_first(researcher_client, runs_dir):
    make_run("old sft")
    make_run("colour rm", kind=Run.Kind.REWARD_MODEL, status=Run.Status.RUNNING)
    make_run("new sft", status=Run.Status.FAILED)

    def names(**query) -> list[str]:
        response = researcher_client.get(reverse("runs:runs"), query)
        assert response.status_code == 200
        return [run.name for run in response.context["page"]]

    assert names() == ["new sft", "colour rm", "old sft"]
    assert names(kind="sft") == ["new sft", "old sft"]
    assert names(status="running") == ["colour rm"]
    assert names(q="SFT", status="failed") == ["new sft"]
    assert names(kind="no-such-kind") == ["new sft", "colour rm", "old sft"]


def test_the_list_pages_keep_the_filters(researcher_client, runs_dir):
    Run.objects.bulk_create(
        Run(kind="sft", name=f"run {i}", config={}, steps=1)
        for i in range(views.PAGE_SIZE + 3)
    )
    make_run("a reward model", kind=Run.Kind.REWARD_MODEL)

    response = researcher_client.get(reverse("runs:runs"), {"kind": "sft"})

    assert len(response.context["page"]) == views.PAGE_SIZE
    assert 'href="?kind=sft&amp;page=2"' in response.content.decode()
    second = researcher_client.get(reverse("runs:runs"), {"kind": "sft", "page": 2})
    assert len(second.context["page"]) == 3


# --- the form -------------------------------------------------------------------------


def test_a_good_form_queues_an_sft_run_on_the_instruction_set(
    researcher, researcher_client, runs_dir, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as sent:
        response = researcher_client.post(NEW, good_form())

    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("runs:run", args=[run.pk])
    assert len(sent) == 1  # the task is sent once the run is committed
    assert (run.kind, run.name, run.status, run.steps) == (
        "sft",
        "sft-demo",
        "queued",
        30,
    )
    assert run.created_by == researcher and run.data_source == (
        "the project's instruction set"
    )
    assert run.config == {
        "model": "tiny-random",
        "steps": 30,
        "batch_size": 8,
        "learning_rate": 1e-4,
        "seed": 3,
        "max_length": 64,
        "warmup_steps": 5,
        "eval_every": 10,
        "checkpoint_every": 10,
        "train_data": run.config["train_data"],
        "output_dir": run.config["output_dir"],
    }
    assert (
        Path(run.config["train_data"]).read_text()
        == services.INSTRUCTION_SET.read_text()
    )


def test_a_reward_model_run_takes_an_upload_and_its_own_settings(
    researcher_client, runs_dir, django_capture_on_commit_callbacks
):
    form = good_form(
        kind="reward-model",
        data="upload",
        file=SimpleUploadedFile("pairs.jsonl", PAIRS.read_bytes()),
        mesh='{"data": 4, "fsdp": 2}',
        ties="soft",
        center_rewards_coefficient="0.01",
        seed="",
    )
    with django_capture_on_commit_callbacks() as sent:
        response = researcher_client.post(NEW, form)

    assert response.status_code == 302 and len(sent) == 1
    run = Run.objects.get()
    assert run.kind == "reward-model" and run.data_source == "upload pairs.jsonl"
    assert run.config["mesh"] == {"data": 4, "fsdp": 2}
    assert run.config["ties"] == "soft"
    assert run.config["center_rewards_coefficient"] == 0.01
    assert "seed" not in run.config  # left blank: the trainer's default
    assert Path(run.config["train_data"]).read_bytes() == PAIRS.read_bytes()


def test_a_campaigns_ratings_train_a_reward_model(
    researcher_client, runs_dir, django_capture_on_commit_callbacks
):
    rated = make_campaign("rated", prompts=10, ratings_per_item=1)
    rater = queue.rater_for(make_user("alice", RATER))
    for choice in (1, 4, 7, 2, 3, 4, 5, 6, 7, 1):  # 4: about the same
        queue.submit(rater, queue.next_task(rater).token, queue.Verdict(choice=choice))
    make_campaign("unrated", prompts=2)

    offered = researcher_client.get(NEW).context["form"].fields["campaign"].queryset
    assert list(offered) == [rated]
    form = good_form(
        kind="reward-model", data="campaign", campaign=rated.pk, ties="soft"
    )
    with django_capture_on_commit_callbacks() as sent:
        response = researcher_client.post(NEW, form)

    assert response.status_code == 302, response.context["form"].errors
    assert len(sent) == 1
    run = Run.objects.get()
    assert run.campaign == rated and run.data_source == "ratings of campaign rated"
    lines = [
        json.loads(line)
        for line in Path(run.config["train_data"]).read_text().splitlines()
    ]
    assert len(lines) == 10  # the ties too: the run's `ties` setting decides
    assert all({"prompt", "chosen", "rejected"} <= set(line) for line in lines)
    assert sum(line.get("label") == 0.5 for line in lines) == 2


def test_a_catalog_policy_is_a_base_model_trained_from_its_checkpoint(
    researcher_client, runs_dir, tmp_path, django_capture_on_commit_callbacks
):
    tiny = load_model("tiny-random")
    checkpoint = tmp_path / "policy"
    flax_params.save(checkpoint, tiny.params, tiny.config)
    catalog_model("my-policy", kind=CatalogModel.Kind.POLICY, path=str(checkpoint))
    catalog_model("my-rm")

    choices = researcher_client.get(NEW).context["form"].fields["model"].choices
    assert [name for name, _ in choices] == ["gemma3-270m", "tiny-random", "my-policy"]
    with django_capture_on_commit_callbacks():
        researcher_client.post(NEW, good_form(model="my-policy"))

    assert Run.objects.get().config["model"] == str(checkpoint)


def test_a_catalog_policy_whose_checkpoint_is_gone_is_a_form_error(
    researcher_client, runs_dir, tmp_path, django_capture_on_commit_callbacks
):
    emptied = tmp_path / "policy"
    emptied.mkdir()
    catalog_model("my-policy", kind=CatalogModel.Kind.POLICY, path=str(emptied))

    with django_capture_on_commit_callbacks() as sent:
        response = researcher_client.post(NEW, good_form(model="my-policy"))

    assert response.status_code == 400
    errors = response.context["form"].errors["model"]
    assert any("no Orbax checkpoint found" in error for error in errors), errors
    assert Run.objects.count() == 0 and not sent


BAD_FORMS = {
    "no name": ({"name": ""}, "name", "This field is required."),
    "a kind it cannot launch": ({"kind": "reinforce"}, "kind", "Select a valid"),
    "an unknown base model": ({"model": "gpt-5"}, "model", "Select a valid"),
    "no file to upload": ({"data": "upload"}, "file", "Choose a JSON-lines file"),
    "no campaign": ({"data": "campaign"}, "campaign", "Choose a campaign"),
    "an unrated campaign": ({"data": "campaign", "campaign": 999}, "campaign", "valid"),
    "instructions for a reward model": (
        {"kind": "reward-model"},
        "data",
        "not preference pairs",
    ),
    "steps not a number": ({"steps": "many"}, "steps", "Enter a whole number."),
    "no steps": ({"steps": 0}, "steps", "steps: must be at least 1"),
    "a bad batch size": ({"batch_size": -8}, "batch_size", "must be at least 1"),
    "a learning rate of 5": (
        {"learning_rate": 5},
        "learning_rate",
        "must be in (0, 1)",
    ),
    "a learning rate in words": ({"learning_rate": "fast"}, "learning_rate", "number"),
    "a seed in words": ({"seed": "x"}, "seed", "Enter a whole number."),
    "too short": ({"max_length": 4}, "max_length", "must be at least 8"),
    "negative warmup": ({"warmup_steps": -1}, "warmup_steps", "must not be negative"),
    "no evaluations": ({"eval_every": 0}, "eval_every", "must be at least 1"),
    "no checkpoints": ({"checkpoint_every": 0}, "checkpoint_every", "at least 1"),
    "a mesh that is not JSON": ({"mesh": "data=4"}, "mesh", "Give a JSON object"),
    "a mesh that is a list": ({"mesh": "[4, 2]"}, "mesh", "Give a JSON object"),
    "a mesh axis the trainer lacks": ({"mesh": '{"model": 2}'}, "mesh", "unknown axis"),
    "a mesh the batch cannot split": ({"mesh": '{"data": 3}'}, "mesh", "split evenly"),
    "ties of a third kind": (
        {"kind": "reward-model", "data": "upload", "ties": "maybe"},
        "ties",
        "Select a valid",
    ),
    "a negative centering": (
        {"kind": "reward-model", "data": "upload", "center_rewards_coefficient": -1},
        "center_rewards_coefficient",
        "must not be negative",
    ),
}


@pytest.mark.parametrize("changes, field, message", BAD_FORMS.values(), ids=BAD_FORMS)
def test_bad_values_are_shown_on_the_form_and_nothing_is_queued(
    researcher_client, runs_dir, django_capture_on_commit_callbacks, changes, field,
    message,
):  # fmt: skip
    if changes.get("data") == "upload" and field != "file":
        changes["file"] = SimpleUploadedFile("pairs.jsonl", PAIRS.read_bytes())

    with django_capture_on_commit_callbacks() as sent:
        response = researcher_client.post(NEW, good_form(**changes))

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert any(message in error for error in errors[field]), errors
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert Run.objects.count() == 0 and not sent
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_an_upload_with_bad_lines_is_refused_naming_them_and_nothing_is_queued(
    researcher_client, runs_dir, django_capture_on_commit_callbacks
):
    good = PAIRS.read_text().splitlines()[0]
    upload = SimpleUploadedFile(
        "pairs.jsonl", f'{good}\n{{"prompt": "hi"}}\n{good}\nnot json\n'.encode()
    )

    with django_capture_on_commit_callbacks() as sent:
        response = researcher_client.post(
            NEW, good_form(kind="reward-model", data="upload", file=upload)
        )

    assert response.status_code == 400
    page = response.content.decode()
    assert "2 bad line(s)" in page
    assert "line 2: missing key" in page and "line 4: not JSON" in page
    assert str(runs_dir) not in page
    assert Run.objects.count() == 0 and not sent
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# --- a run's page ---------------------------------------------------------------------


def test_a_runs_page_shows_its_progress_curves_config_log_and_checkpoints(
    researcher_client, runs_dir
):
    started = timezone.now() - datetime.timedelta(seconds=100)
    run = make_run(
        "colours",
        kind=Run.Kind.REWARD_MODEL,
        status=Run.Status.RUNNING,
        steps=40,
        step=10,
        started_at=started,
        log="12:00:00 started on training@host\n12:00:01 step 1: loss 0.69",
    )
    earlier = started - datetime.timedelta(seconds=500)
    for step in range(1, 5):  # an earlier try, killed after step 4
        metric(run, step, earlier + datetime.timedelta(seconds=step), loss=0.9)
    for step in range(3, 11):  # resumed from step 2's checkpoint: a step every 2 s
        at = started + datetime.timedelta(seconds=2 * step)
        held_out = {"eval_accuracy": 0.75, "samples": ["Blue."]} if step == 10 else {}
        metric(
            run, step, at, loss=1 / step, accuracy=0.5, learning_rate=3e-5, **held_out
        )
    output = Path(run.config["output_dir"])
    for step in (5, 10):
        (output / "checkpoints" / str(step)).mkdir(parents=True)
        (output / "checkpoints" / str(step) / "state").write_bytes(b"x" * 1024 * step)

    response = researcher_client.get(reverse("runs:run", args=[run.pk]))

    assert response.status_code == 200
    context = response.context
    points = context["points"]
    assert [p["step"] for p in points] == list(range(1, 11))
    assert [p["loss"] for p in points[:3]] == [0.9, 0.9, 1 / 3]  # step 3 logged again
    assert points[-1]["eval_accuracy"] == 0.75 and "samples" not in points[-1]
    assert context["eta_seconds"] == pytest.approx(30 * 2.0)
    assert context["latest"] == {
        "loss": 0.1,
        "accuracy": 0.5,
        "learning_rate": 3e-5,
        "eval_accuracy": 0.75,
    }
    html = response.content.decode()
    assert 'id="run-points"' in html and "about 1 min 00 s left" in html
    assert "step 10 of 40" in html and "3e-05" in html
    assert f'data-socket="/ws/runs/{run.pk}/?after={Metric.objects.last().pk}"' in html
    assert "started on training@host" in html and "&quot;steps&quot;: 20" in html
    assert [c["label"] for c in context["checkpoints"]] == ["step 5", "step 10"]
    assert "10.0\xa0KB" in html
    assert "Cancel</button>" in html and "Resume</button>" not in html
    assert "Register</button>" not in html


def test_a_finished_runs_page_offers_register_and_shows_its_final_record(
    researcher_client, runs_dir
):
    run = make_run(final={"status": "finished", "eval_loss": 0.5, "checkpoint": "/m"})
    (Path(run.config["output_dir"]) / "model").mkdir(parents=True)

    response = researcher_client.get(reverse("runs:run", args=[run.pk]))

    html = response.content.decode()
    assert response.context["eta_seconds"] is None
    assert "&quot;eval_loss&quot;: 0.5" in html
    assert "Register</button>" in html and "Delete</button>" in html
    assert "Cancel</button>" not in html and "Resume</button>" not in html
    assert [c["label"] for c in response.context["checkpoints"]] == ["trained model"]


def test_long_runs_send_at_most_about_max_points_with_every_evaluation(
    researcher_client, runs_dir
):
    run = make_run(steps=5000)
    Metric.objects.bulk_create(
        Metric(
            run=run,
            step=step,
            values={"step": step, "loss": 1.0}
            | ({"eval_loss": 2.0} if step % 1000 == 0 else {}),
        )
        for step in range(1, 5001)
    )

    points = researcher_client.get(reverse("runs:run", args=[run.pk])).context["points"]

    assert views.MAX_POINTS // 2 <= len(points) <= views.MAX_POINTS + 5
    assert [p["step"] for p in points if "eval_loss" in p] == [
        1000,
        2000,
        3000,
        4000,
        5000,
    ]
    assert points[0]["step"] == 1 and points[-1]["step"] == 5000


def test_names_metrics_and_log_lines_stay_inert(researcher_client, runs_dir):
    run = make_run(XSS, status=Run.Status.RUNNING, log=f"12:00:00 {XSS}")
    metric(run, 1, **{XSS: 1.0, "loss": 0.5})
    catalog_model(XSS_NAME)

    pages = [
        researcher_client.get(reverse("runs:runs")),
        researcher_client.get(reverse("runs:run", args=[run.pk])),
        researcher_client.get(reverse("runs:models")),
        researcher_client.get(reverse("runs:model", args=[XSS_NAME])),
    ]

    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert XSS not in html and XSS_NAME not in html and "<script>alert" not in html
    run_page = pages[1].content.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in run_page
    assert "\\u003Cscript\\u003Ealert" in run_page  # the metric's name, in the JSON


# --- cancel, resume, delete, register -------------------------------------------------


def test_cancel_stops_a_queued_run_and_asks_a_running_one_to_stop(
    researcher_client, runs_dir
):
    queued = make_run("q", status=Run.Status.QUEUED)
    running = make_run("r", status=Run.Status.RUNNING)
    finished = make_run("f")

    for run in (queued, running, finished):
        response = researcher_client.post(reverse("runs:cancel", args=[run.pk]))
        assert response["Location"] == reverse("runs:run", args=[run.pk])

    queued.refresh_from_db(), running.refresh_from_db(), finished.refresh_from_db()
    assert queued.status == "stopped"
    assert running.status == "running" and running.cancel_requested
    assert finished.status == "finished" and not finished.cancel_requested
    page = researcher_client.get(reverse("runs:run", args=[finished.pk]))
    assert b"Only a queued or running run can be cancelled." in page.content


def test_resume_queues_a_stopped_run_again(
    researcher_client, runs_dir, django_capture_on_commit_callbacks
):
    stopped = make_run("s", status=Run.Status.STOPPED, error="cancelled")
    finished = make_run("f")

    with django_capture_on_commit_callbacks() as sent:
        researcher_client.post(reverse("runs:resume", args=[stopped.pk]))
        researcher_client.post(reverse("runs:resume", args=[finished.pk]))

    assert len(sent) == 1
    stopped.refresh_from_db(), finished.refresh_from_db()
    assert (stopped.status, stopped.error) == ("queued", "")
    assert finished.status == "finished"


def test_delete_removes_an_ended_run_and_its_directory_but_not_a_running_one(
    researcher_client, runs_dir
):
    ended, running = make_run("ended"), make_run("busy", status=Run.Status.RUNNING)
    for run in (ended, running):
        Path(run.config["output_dir"]).mkdir(parents=True)

    gone = researcher_client.post(reverse("runs:delete", args=[ended.pk]))
    kept = researcher_client.post(reverse("runs:delete", args=[running.pk]))

    assert gone["Location"] == reverse("runs:runs")
    assert kept["Location"] == reverse("runs:run", args=[running.pk])
    assert list(Run.objects.values_list("name", flat=True)) == ["busy"]
    assert not services.run_directory(ended).exists()
    assert services.run_directory(running).exists()
    page = researcher_client.get(kept["Location"])
    assert b"Cancel the run before deleting it." in page.content


def test_register_adds_a_finished_runs_model_to_the_catalog_and_publishes_it(
    researcher, researcher_client, runs_dir, django_capture_on_commit_callbacks
):
    run = make_run("sft", final={"status": "finished", "checkpoint": "/ckpt/model"})
    running = make_run("busy", status=Run.Status.RUNNING)
    url = reverse("runs:register", args=[run.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = researcher_client.post(url, {"name": "sft-chat-x1"})
    try:
        entry = serving.client().redis.hget(protocol.CATALOG_KEY, "sft-chat-x1")
    finally:
        serving.client().redis.hdel(protocol.CATALOG_KEY, "sft-chat-x1")

    assert response["Location"] == reverse("runs:run", args=[run.pk])
    model = CatalogModel.objects.get()
    assert (model.name, model.kind, model.path) == (
        "sft-chat-x1",
        "policy",
        "/ckpt/model",
    )
    assert model.run == run and model.registered_by == researcher
    assert entry == protocol.catalog_entry("/ckpt/model", "policy")
    for pk, name in [(run.pk, "sft-chat-x1"), (run.pk, "a/b"), (running.pk, "new")]:
        researcher_client.post(reverse("runs:register", args=[pk]), {"name": name})
    assert CatalogModel.objects.count() == 1
    page = researcher_client.get(reverse("runs:run", args=[run.pk])).content.decode()
    assert "In the catalog as" in page and "sft-chat-x1" in page


# --- the catalog ----------------------------------------------------------------------


def test_the_catalog_lists_models_with_their_runs(researcher_client, runs_dir):
    run = make_run("colours rm", kind=Run.Kind.REWARD_MODEL)
    catalog_model("colour-rm", run=run, reward_mean=0.25, reward_std=1.5)
    catalog_model(
        "chat-policy", kind=CatalogModel.Kind.POLICY, base_model="gemma3-270m"
    )

    response = researcher_client.get(reverse("runs:models"))

    rows = [(model.name, served) for model, served in response.context["models"]]
    assert rows == [("chat-policy", False), ("colour-rm", False)]
    html = response.content.decode()
    assert reverse("runs:run", args=[run.pk]) in html and "0.25 / 1.5" in html


def test_a_policys_page_has_no_score_form(researcher_client, runs_dir):
    catalog_model("chat-policy", kind=CatalogModel.Kind.POLICY)

    response = researcher_client.get(reverse("runs:model", args=["chat-policy"]))

    assert response.status_code == 200 and b"Score an answer" not in response.content
    assert (
        researcher_client.get(reverse("runs:model", args=["nope"])).status_code == 404
    )


def test_scoring_without_a_worker_says_so(researcher_client, runs_dir):
    model = catalog_model("unserved-rm-x9")
    url = reverse("runs:model", args=[model.name])

    page = researcher_client.post(url, {"prompt": "Hi", "answer": "Hello"})
    empty = researcher_client.post(url, {"prompt": "Hi", "answer": "  "})

    assert page.status_code == 400
    assert b"The reward model could not score it" in page.content
    assert empty.status_code == 400 and b"This field is required." in empty.content


SCORE_ERRORS = [
    ("nope", {"prompt": "Hi", "answer": "Hello"}, 404, "No model named 'nope'"),
    ("unserved-rm-x9", {"prompt": "Hi", "answer": "Hello"}, 503, "serves model"),
    ("unserved-rm-x9", {"prompt": "Hi"}, 400, "answer must be a string."),
    ("unserved-rm-x9", {"prompt": 3, "answer": "a"}, 400, "prompt must be a string."),
    ("unserved-rm-x9", {"prompt": "Hi", "answer": " "}, 400, "Give a prompt and an"),
    ("a-policy", {"prompt": "Hi", "answer": "Hello"}, 400, "is not a reward model"),
    ("unserved-rm-x9", [1, 2], 400, "The body must be a JSON object."),
]


@pytest.mark.parametrize("name, body, status, message", SCORE_ERRORS)
def test_the_score_api_refuses_what_it_cannot_score(
    researcher_client, runs_dir, name, body, status, message
):
    catalog_model("unserved-rm-x9")
    catalog_model("a-policy", kind=CatalogModel.Kind.POLICY)

    response = researcher_client.post(
        reverse("runs:api-score", args=[name]), body, content_type="application/json"
    )

    assert response.status_code == status
    assert message in response.json()["error"]
