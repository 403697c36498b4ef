"""Forms of the training pages: a new run, the run list's filters, registering a
run's model, and scoring an answer with a reward model.

The run form checks what it can see on its own (types, which data goes with which
kind, the mesh's JSON); the config's values are checked by the trainer itself
(`services.start_run`), whose refusal lands on the field it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef

from model_service.client import GenerationError
from webapp.ratings.models import Campaign, Rating
from webapp.runs import services
from webapp.runs.models import CatalogModel, Run

UPLOAD, INSTRUCTIONS, CAMPAIGN = "upload", "instructions", "campaign"
# Settings every run has, and a reward model's own; a blank optional one is left to
# the trainer's default.
TRAIN_SETTINGS = (
    "steps",
    "batch_size",
    "learning_rate",
    "seed",
    "max_length",
    "warmup_steps",
    "eval_every",
    "checkpoint_every",
    "mesh",
)
REWARD_MODEL_SETTINGS = ("ties", "center_rewards_coefficient")


def builtin_models() -> tuple[str, ...]:
    # Imported here: the registry brings JAX, which only this form's page needs.
    from model_service.registry import NAMES

    return NAMES


def rated_campaigns():
    """Campaigns with at least one rating: their export is preference data."""
    rated = Rating.objects.filter(item__campaign=OuterRef("pk"))
    return Campaign.objects.filter(Exists(rated)).order_by("-created_at")


class RunForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(
        choices=[
            (Run.Kind.SFT, Run.Kind.SFT.label),
            (Run.Kind.REWARD_MODEL, Run.Kind.REWARD_MODEL.label),
        ]
    )
    model = forms.ChoiceField(
        label="Base model", help_text="A built-in model or a catalog policy."
    )
    data = forms.ChoiceField(
        choices=[
            (UPLOAD, "An uploaded file"),
            (INSTRUCTIONS, "The project's instruction set (SFT)"),
            (CAMPAIGN, "A campaign's ratings"),
        ],
        widget=forms.RadioSelect,
        initial=UPLOAD,
    )
    file = forms.FileField(
        required=False,
        help_text='JSON lines: {"messages": [...]} or {"prompt", "completion"} for '
        'SFT; {"prompt", "chosen", "rejected"} for a reward model.',
    )
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.none(), required=False)
    steps = forms.IntegerField(initial=100)
    batch_size = forms.IntegerField(initial=8)
    learning_rate = forms.FloatField(initial=5e-5)
    seed = forms.IntegerField(required=False, initial=0)
    max_length = forms.IntegerField(required=False, initial=256)
    warmup_steps = forms.IntegerField(required=False, initial=10)
    eval_every = forms.IntegerField(required=False, initial=50)
    checkpoint_every = forms.IntegerField(required=False, initial=50)
    mesh = forms.CharField(
        required=False,
        help_text='Devices per axis, as JSON: {"data": 4, "fsdp": 2}. Blank: every '
        "device on the data axis.",
    )
    ties = forms.ChoiceField(
        required=False,
        choices=[("drop", "Drop ties"), ("soft", "Train on ties as 0.5 labels")],
        initial="drop",
        help_text="Reward models only.",
    )
    center_rewards_coefficient = forms.FloatField(
        required=False, initial=0.0, help_text="Reward models only."
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A catalog policy is trained from its checkpoint; its name is what people see.
        self.policies = dict(
            CatalogModel.objects.filter(kind=CatalogModel.Kind.POLICY).values_list(
                "name", "path"
            )
        )
        self.fields["model"].choices = [
            (name, name) for name in [*builtin_models(), *self.policies]
        ]
        self.fields["campaign"].queryset = rated_campaigns()

    def clean_mesh(self) -> dict[str, Any] | None:
        text = self.cleaned_data["mesh"].strip()
        if not text:
            return None
        try:
            mesh = json.loads(text)
        except json.JSONDecodeError:
            mesh = None
        if not isinstance(mesh, dict):
            raise ValidationError('Give a JSON object, such as {"data": 4, "fsdp": 2}.')
        return mesh

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        source, kind = data.get("data"), data.get("kind")
        if source == UPLOAD and not data.get("file"):
            self.add_error("file", "Choose a JSON-lines file to upload.")
        if source == CAMPAIGN and not data.get("campaign"):
            self.add_error("campaign", "Choose a campaign with ratings.")
        if source == INSTRUCTIONS and kind == Run.Kind.REWARD_MODEL:
            self.add_error(
                "data", "The instruction set holds conversations, not preference pairs."
            )
        return data

    def run_settings(self) -> dict[str, Any]:
        """The run's config without its paths (`start_run` adds those)."""
        data = self.cleaned_data
        names = TRAIN_SETTINGS
        if data["kind"] == Run.Kind.REWARD_MODEL:
            names += REWARD_MODEL_SETTINGS
        chosen = {name: data[name] for name in names if data[name] not in (None, "")}
        return {"model": self.policies.get(data["model"], data["model"]), **chosen}

    def data_writer(self) -> tuple[Callable[[IO[str]], None], str]:
        """What writes the run's data file, and where it came from, in words."""
        data = self.cleaned_data
        if data["data"] == UPLOAD:
            upload = data["file"]
            return services.copy_data(upload), f"upload {upload.name}"
        if data["data"] == INSTRUCTIONS:
            return services.instruction_set_data, "the project's instruction set"
        campaign = data["campaign"]
        return (
            services.campaign_data(campaign, data["kind"]),
            f"ratings of campaign {campaign.name}",
        )

    def start(self, user) -> Run | None:
        """Starts the valid form's run (see `services.start_run`); None once the
        trainer's refusal is on the form, on the field it names."""
        data = self.cleaned_data
        write_data, source = self.data_writer()
        try:
            return services.start_run(
                data["kind"],
                data["name"],
                self.run_settings(),
                write_data,
                data_source=source,
                user=user,
                campaign=data["campaign"] if data["data"] == CAMPAIGN else None,
            )
        except ValidationError as exc:
            self.add_error(self._field_named(exc), exc)
            return None

    def _field_named(self, error: ValidationError) -> str | None:
        """The field a trainer's message starts with (`"steps: must be ..."`)."""
        key = " ".join(error.messages).partition(":")[0]
        return key if key in self.fields else None


class RunFilterForm(forms.Form):
    kind = forms.ChoiceField(
        required=False, choices=[("", "Any kind"), *Run.Kind.choices]
    )
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *Run.Status.choices]
    )
    q = forms.CharField(
        required=False,
        label="Name contains",
        max_length=100,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Name contains"}
        ),
    )

    def filter(self, runs):
        """The runs that the valid form's filters keep."""
        data = self.cleaned_data
        if data["kind"]:
            runs = runs.filter(kind=data["kind"])
        if data["status"]:
            runs = runs.filter(status=data["status"])
        if data["q"]:
            runs = runs.filter(name__icontains=data["q"])
        return runs


class RegisterForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="The name people choose the model by."
    )


class ScoreForm(forms.Form):
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))
    answer = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}))

    def score(self, model: CatalogModel) -> dict[str, float] | None:
        """The valid form's answer scored by the reward model (see
        `services.score_answer`); None once the reason it was not is on the form."""
        data = self.cleaned_data
        try:
            return services.score_answer(model, data["prompt"], data["answer"])
        except ValidationError as exc:
            self.add_error(None, exc)
        except GenerationError as exc:
            self.add_error(None, f"The reward model could not score it: {exc}")
        return None


# --- the loop of a campaign -----------------------------------------------------------


class RewardModelStepForm(forms.Form):
    """Train a reward model on a campaign's ratings."""

    name = forms.CharField(max_length=100)
    steps = forms.IntegerField(min_value=1, initial=200)
    batch_size = forms.IntegerField(min_value=1, initial=8)
    learning_rate = forms.FloatField(initial=1e-5)
    max_length = forms.IntegerField(min_value=8, initial=512)

    def settings(self) -> dict[str, Any]:
        data = self.cleaned_data
        steps = data["steps"]
        return {
            **{k: data[k] for k in ("steps", "batch_size", "learning_rate")},
            "max_length": data["max_length"],
            "eval_every": max(1, steps // 4),
            "checkpoint_every": max(1, steps // 4),
        }


class RlhfStepForm(forms.Form):
    """REINFORCE from the campaign's model with one of its reward models."""

    name = forms.CharField(max_length=100)
    reward_run = forms.ModelChoiceField(queryset=Run.objects.none())
    steps = forms.IntegerField(min_value=1, initial=100)
    prompts_per_step = forms.IntegerField(min_value=1, initial=8)
    k = forms.IntegerField(min_value=2, initial=4)
    learning_rate = forms.FloatField(initial=1e-6)
    beta = forms.FloatField(min_value=0, initial=0.05)
    target_kl = forms.FloatField(min_value=0, required=False, initial=6.0)
    max_new_tokens = forms.IntegerField(min_value=1, initial=64)
    max_length = forms.IntegerField(min_value=8, initial=512)
    judge = forms.ChoiceField(required=False)

    def __init__(self, campaign: Campaign, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reward_run"].queryset = Run.objects.filter(
            campaign=campaign, kind=Run.Kind.REWARD_MODEL, status=Run.Status.FINISHED
        )
        policies = CatalogModel.objects.filter(kind=CatalogModel.Kind.POLICY)
        self.fields["judge"].choices = [("", "no judge")] + [
            (m.name, m.name) for m in policies
        ]

    def settings(self) -> dict[str, Any]:
        data = self.cleaned_data
        names = ("steps", "prompts_per_step", "k", "learning_rate", "beta")
        names += ("max_new_tokens", "max_length")
        settings_ = {name: data[name] for name in names}
        settings_["eval_every"] = settings_["checkpoint_every"] = max(
            1, data["steps"] // 4
        )
        if data["target_kl"]:
            settings_["target_kl"] = data["target_kl"]
        if data["judge"]:
            settings_["judge"] = services.model_path(data["judge"])
        return settings_


class EvaluateStepForm(forms.Form):
    """A campaign of a trained policy against the campaign's model, held-out prompts."""

    name = forms.CharField(max_length=100)
    policy = forms.ModelChoiceField(queryset=CatalogModel.objects.none())

    def __init__(self, campaign: Campaign, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["policy"].queryset = CatalogModel.objects.filter(
            kind=CatalogModel.Kind.POLICY, run__campaign=campaign
        )


class JudgeStepForm(forms.Form):
    """A catalog policy (or a registry model) rates the campaign as a judge."""

    judge = forms.ChoiceField()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        names = [
            *builtin_models(),
            *CatalogModel.objects.filter(kind=CatalogModel.Kind.POLICY).values_list(
                "name", flat=True
            ),
        ]
        self.fields["judge"].choices = [(n, n) for n in names]
