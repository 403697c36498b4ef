"""What researchers do with training runs and the model catalog.

A run's config is checked by the training package itself (`training.jobs.configure`)
before anything is queued; its data is written into the run's own directory under
`RUNS_DIR` (an upload, a campaign's preference export, or the project's instruction
set), so a run never depends on a file that may change. Registered models are mirrored
into Redis (`gemma:catalog`), where generation workers find them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from model_service import protocol
from webapp.core import serving
from webapp.runs.models import CatalogModel, Run

# The project's own instruction set: SFT makes the pretrained 270M a chat model.
INSTRUCTION_SET = settings.BASE_DIR / "training" / "data" / "sft_conversations.jsonl"
DATA_FILE = "data.jsonl"


def runs_dir() -> Path:
    return Path(settings.RUNS_DIR)


def run_directory(run: Run) -> Path:
    return runs_dir() / f"{run.pk}-{slugify(run.name)[:40] or run.kind}"


def check_config(kind: str, config: dict[str, Any]) -> None:
    """The training package's own checks of the config and of its data (read as
    the job will), as a form error; a bad line is named by its number (the file's
    path is the run's, not one the researcher knows)."""
    from training import jobs
    from training.config import ConfigError
    from training.data import DataError

    try:
        jobs.check_data(kind, jobs.configure(kind, config))
    except ConfigError as exc:
        raise ValidationError(str(exc)) from None
    except DataError as exc:
        message = str(exc).replace(f"{config['train_data']}:", "line ")
        raise ValidationError(message) from None


def start_run(
    kind: str,
    name: str,
    settings_: dict[str, Any],
    write_data,
    data_source: str,
    user=None,
    campaign=None,
) -> Run:
    """Makes a run: its directory, its data (`write_data(out)` writes the JSON
    lines), its checked config; queues it after the commit.

    Raises:
        ValidationError: a bad config or bad data (nothing is kept).
    """
    from training.tasks import run_training

    if kind not in Run.Kind.values:
        raise ValidationError(f"Unknown kind of run {kind!r}.")
    with transaction.atomic():
        run = Run.objects.create(
            kind=kind,
            name=name,
            config={},
            steps=settings_.get("steps", 1),
            data_source=data_source,
            created_by=user,
            campaign=campaign,
        )
        directory = run_directory(run)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / DATA_FILE).open("w", encoding="utf-8") as out:
                write_data(out)
            config = {
                **settings_,
                "train_data": str(directory / DATA_FILE),
                "output_dir": str(directory / "output"),
            }
            check_config(kind, config)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        run.config = config
        run.steps = config["steps"]
        run.save(update_fields=["config", "steps"])
        transaction.on_commit(lambda: run_training.delay(run.pk))
    return run


def copy_data(source: IO[bytes]):
    """A `write_data` for an uploaded file."""

    def write(out: IO[str]) -> None:
        for raw in source:
            out.write(raw.decode("utf-8", "replace"))

    return write


def instruction_set_data(out: IO[str]) -> None:
    out.write(INSTRUCTION_SET.read_text(encoding="utf-8"))


def campaign_data(campaign, kind: str):
    """A `write_data` from a campaign's ratings: preference pairs for a reward model,
    ties included as 0.5 labels (its `ties` setting drops them or learns from them);
    the preferred answers as conversations for SFT, where a tie prefers nothing."""
    from webapp.ratings.export import preference_lines

    reward_model = kind == Run.Kind.REWARD_MODEL

    def write(out: IO[str]) -> None:
        for line in preference_lines(
            campaign, ties="label" if reward_model else "drop"
        ):
            record = (
                line
                if reward_model
                else {"messages": [*line["prompt"], *line["chosen"]]}
            )
            out.write(json.dumps(record, ensure_ascii=False) + "\n")

    return write


def cancel(run: Run) -> None:
    """A running run stops at its next step, keeping its last checkpoint; a queued
    one never starts."""
    runs = Run.objects.filter(pk=run.pk)
    stopped = runs.filter(status=Run.Status.QUEUED).update(status=Run.Status.STOPPED)
    if not stopped and not runs.filter(status=Run.Status.RUNNING).update(
        cancel_requested=True
    ):
        raise ValidationError("Only a queued or running run can be cancelled.")


def resume(run: Run) -> None:
    """Queues a stopped or failed run again; it goes on from its last checkpoint."""
    from training.tasks import run_training

    resumed = Run.objects.filter(
        pk=run.pk, status__in=[Run.Status.STOPPED, Run.Status.FAILED]
    ).update(status=Run.Status.QUEUED, cancel_requested=False, error="")
    if not resumed:
        raise ValidationError("Only a stopped or failed run resumes.")
    transaction.on_commit(lambda: run_training.delay(run.pk))


def delete(run: Run) -> None:
    if run.status in (Run.Status.QUEUED, Run.Status.RUNNING):
        raise ValidationError("Cancel the run before deleting it.")
    if run.models.exists():
        raise ValidationError("A registered model comes from this run: keep it.")
    shutil.rmtree(run_directory(run), ignore_errors=True)
    run.delete()


# --- the catalog ----------------------------------------------------------------------


def register(run: Run, name: str, user=None) -> CatalogModel:
    """Adds a finished run's trained model to the catalog under `name`; generation
    workers started with `--catalog` serve it by that name."""
    name = name.strip()
    if run.status != Run.Status.FINISHED or not run.checkpoint:
        raise ValidationError("Only a finished run's model can be registered.")
    if not name or len(name) > 100 or "/" in name:
        raise ValidationError("A model name has 1 to 100 characters and no '/'.")
    if (
        name in serving.available_models()
        or CatalogModel.objects.filter(name=name).exists()
    ):
        raise ValidationError(f"A model named {name!r} exists already.")
    kind = (
        CatalogModel.Kind.REWARD_MODEL
        if run.kind == Run.Kind.REWARD_MODEL
        else CatalogModel.Kind.POLICY
    )
    fields = {}
    if kind == CatalogModel.Kind.REWARD_MODEL:
        from model_service.checkpoints import reward_head

        head = reward_head.load(run.checkpoint)
        fields = {"reward_mean": head.reward_mean, "reward_std": head.reward_std}
    with transaction.atomic():
        model = CatalogModel.objects.create(
            name=name,
            kind=kind,
            path=run.checkpoint,
            base_model=run.config.get("model", ""),
            run=run,
            context_length=run.config.get("max_length"),
            registered_by=user,
            **fields,
        )
        transaction.on_commit(lambda: publish(model))
    return model


def model_path(name: str) -> str:
    """Where a model's weights are: a catalog model's checkpoint; else the name itself
    (a registry name or a path), for `model_service.registry.load_model`."""
    found = CatalogModel.objects.filter(name=name).values_list("path", flat=True)
    return found.first() or name


def publish(model: CatalogModel) -> None:
    serving.client().redis.hset(
        protocol.CATALOG_KEY, model.name, protocol.catalog_entry(model.path, model.kind)
    )


def publish_catalog() -> int:
    """Mirrors the whole catalog into Redis (at start: an embedded Redis keeps
    nothing); returns how many models."""
    models = list(CatalogModel.objects.all())
    for model in models:
        publish(model)
    return len(models)


def score_answer(model: CatalogModel, prompt: str, answer: str) -> dict[str, float]:
    """A reward model's reward for an answer to a prompt, from a generation worker."""
    if model.kind != CatalogModel.Kind.REWARD_MODEL:
        raise ValidationError(f"{model.name} is not a reward model.")
    if not prompt.strip() or not answer.strip():
        raise ValidationError("Give a prompt and an answer.")
    from model_service.reward import answer_ids

    ids = answer_ids(
        serving.tokenizer_for(model.path), [{"role": "user", "content": prompt}], answer
    )
    raw, normalized = serving.client().reward(model.name, ids)
    return {"reward": raw, "normalized_reward": normalized}
