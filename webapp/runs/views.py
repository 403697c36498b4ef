"""The training pages (`/runs/`) and the model catalog's (`/models/`), researchers
and staff only. Writes go through `services`; a run's curves follow it over its
WebSocket (`webapp.runs.consumers`), never by polling.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from model_service import protocol
from model_service.client import GenerationError
from webapp.accounts.access import researcher_required
from webapp.accounts.roles import is_researcher
from webapp.core import serving
from webapp.ratings.api import BadInput, error, json_api, json_body
from webapp.ratings.forms import first_error
from webapp.runs import services
from webapp.runs.forms import RegisterForm, RunFilterForm, RunForm, ScoreForm
from webapp.runs.models import CatalogModel, Run

PAGE_SIZE = 25
# The most points of a run's curves a page starts with (held-out evaluations are
# always among them); the live ones come on top.
MAX_POINTS = 2000

# --- runs -----------------------------------------------------------------------------


@researcher_required
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    form = RunFilterForm(request.GET)
    runs = Run.objects.select_related("created_by")
    if form.is_valid():
        runs = form.filter(runs)
    page = Paginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "runs/run_list.html", {"form": form, "page": page})


@researcher_required
def run_create(request: HttpRequest) -> HttpResponse:
    form = RunForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        run = form.start(request.user)
        if run is not None:
            messages.success(request, "The run is queued for a training worker.")
            return redirect("runs:run", pk=run.pk)
    status = 400 if form.is_bound else 200
    return render(request, "runs/run_form.html", {"form": form}, status=status)


@researcher_required
@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(Run.objects.select_related("created_by", "campaign"), pk=pk)
    points, last_id = curve_points(run)
    context = {
        "run": run,
        "points": points,
        "last_metric_id": last_id,
        "latest": latest_values(points),
        "eta_seconds": eta_seconds(run, points),
        "config": json.dumps(run.config, indent=2, ensure_ascii=False),
        "final": json.dumps(run.final, indent=2, ensure_ascii=False),
        "checkpoints": checkpoints_on_disk(run),
        "models": run.models.all(),
        "register_form": RegisterForm(),
    }
    return render(request, "runs/run_detail.html", context)


def curve_points(run: Run) -> tuple[list[dict[str, Any]], int]:
    """The run's logged steps for its curves: their numeric values, one record per
    step (a step logged again after a resume replaces the first), evenly thinned to
    about `MAX_POINTS`; and the id of its last metric, after which the page's socket
    goes on."""
    rows = run.metrics.order_by("step", "pk").values_list(
        "pk", "step", "values", "created_at"
    )
    by_step, last_id = {}, 0
    for pk, step, values, created_at in rows:
        numbers = {key: value for key, value in values.items() if is_number(value)}
        by_step[step] = {**numbers, "step": step, "time": created_at.timestamp()}
        last_id = max(last_id, pk)
    points = list(by_step.values())
    stride = math.ceil(len(points) / MAX_POINTS) or 1
    kept = [
        point
        for i, point in enumerate(points)
        if i % stride == 0
        or i == len(points) - 1
        or any(k.startswith("eval_") for k in point)
    ]
    return kept, last_id


def latest_values(points: list[dict[str, Any]]) -> dict[str, float]:
    """Each numeric series' latest value, held-out ones included."""
    latest = {}
    for point in points:
        for key, value in point.items():
            if key not in ("step", "time") and is_number(value):
                latest[key] = value
    return latest


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def eta_seconds(run: Run, points: list[dict[str, Any]]) -> float | None:
    """Seconds left at the pace of the steps logged since the run last started
    (the page's script does the same with the live ones)."""
    if run.status != Run.Status.RUNNING or run.started_at is None:
        return None
    since = [p for p in points if p["time"] >= run.started_at.timestamp()]
    if len(since) < 2 or since[-1]["step"] == since[0]["step"]:
        return None
    first, last = since[0], since[-1]
    pace = (last["time"] - first["time"]) / (last["step"] - first["step"])
    return max(run.steps - last["step"], 0) * pace


def checkpoints_on_disk(run: Run) -> list[dict[str, Any]]:
    """The run's checkpoints (by step) and its trained model, with their sizes."""
    # Imported here: `training` brings JAX, which only a run's page needs.
    from training.checkpointing import CHECKPOINTS_DIR
    from training.loop import MODEL_DIR

    output = Path(run.config.get("output_dir", "")) if run.config else None
    if output is None or not output.is_dir():
        return []
    saved = sorted(
        (path for path in (output / CHECKPOINTS_DIR).glob("*") if path.name.isdigit()),
        key=lambda path: int(path.name),
    )
    rows = [{"label": f"step {path.name}", "path": path} for path in saved]
    if (output / MODEL_DIR).is_dir():
        rows.append({"label": "trained model", "path": output / MODEL_DIR})
    for row in rows:
        row["bytes"] = sum(
            f.stat().st_size for f in row["path"].rglob("*") if f.is_file()
        )
    return rows


# A run's buttons: the service that makes the change, what to say once it is made,
# and the page to go to then (None: the run's own).
RUN_CHANGES = {
    "cancel": (
        services.cancel,
        "Cancelled: a running run stops at its next step and keeps its last "
        "checkpoint.",
        None,
    ),
    "resume": (
        services.resume,
        "Queued again: the run goes on from its last checkpoint.",
        None,
    ),
    "delete": (services.delete, "Deleted the run and its directory.", "runs:runs"),
}


@researcher_required
@require_POST
def run_change(request: HttpRequest, pk: int, change: str) -> HttpResponse:
    run = get_object_or_404(Run, pk=pk)
    service, done, then = RUN_CHANGES[change]
    return run_action(request, run, lambda: service(run), done, then)


def run_action(
    request: HttpRequest,
    run: Run,
    change: Callable[[], object],
    done: str,
    then: str | None = None,
) -> HttpResponse:
    """Makes a service's change to a run; its refusal (back on the run's page) or
    `done` (on the page named `then`, by default the run's) is the next message."""
    try:
        change()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("runs:run", pk=run.pk)
    messages.success(request, done)
    return redirect(then) if then else redirect("runs:run", pk=run.pk)


@researcher_required
@require_POST
def run_register(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=pk)
    form = RegisterForm(request.POST)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect("runs:run", pk=run.pk)
    name = form.cleaned_data["name"]
    return run_action(
        request,
        run,
        lambda: services.register(run, name, user=request.user),
        f"Registered as {name}: generation workers started with --catalog serve it.",
    )


# --- the catalog ----------------------------------------------------------------------


def served_names() -> set[str]:
    """The models that live generation workers serve now, of either kind."""
    workers = serving.client().alive_workers()
    return {
        name
        for kind in (protocol.POLICY, protocol.REWARD_MODEL)
        for name in serving.served_models(workers, kind)
    }


@researcher_required
@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    served = served_names()
    models = [
        (model, model.name in served)
        for model in CatalogModel.objects.select_related("run")
    ]
    return render(request, "runs/model_list.html", {"models": models})


@researcher_required
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    model = get_object_or_404(CatalogModel.objects.select_related("run"), name=name)
    form = ScoreForm(request.POST or None)
    score = form.score(model) if request.method == "POST" and form.is_valid() else None
    context = {
        "model": model,
        "served": model.name in served_names(),
        "form": form,
        "score": score,
    }
    status = 400 if form.errors else 200
    return render(request, "runs/model_detail.html", context, status=status)


@json_api("POST", raters_only=False)
def score_api(request: HttpRequest, name: str) -> JsonResponse:
    """`{"prompt", "answer"}` -> `{"reward", "normalized_reward"}` from a reward
    model of the catalog; 404 for an unknown one, 503 when no worker serves it."""
    if not is_researcher(request.user):
        return error(403, "This API is for researchers.")
    body = json_body(request)
    for field in ("prompt", "answer"):
        if not isinstance(body.get(field), str):
            raise BadInput(f"{field} must be a string.")
    model = CatalogModel.objects.filter(name=name).first()
    if model is None:
        return error(404, f"No model named {name!r} in the catalog.")
    try:
        return JsonResponse(
            services.score_answer(model, body["prompt"], body["answer"])
        )
    except ValidationError as exc:
        raise BadInput(" ".join(exc.messages)) from None
    except GenerationError as exc:
        return error(generation_status(exc), str(exc))


def generation_status(exc: GenerationError) -> int:
    """A scoring request's failure as HTTP: the caller's answer did not fit (400),
    or no worker could score it (503)."""
    caller = (protocol.INVALID_REQUEST, protocol.CONTEXT_LENGTH_EXCEEDED)
    return 400 if exc.code in caller else 503
