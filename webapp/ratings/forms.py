"""Forms of the ratings pages and API: a rater's verdict and skip, a researcher's
campaign, file uploads, guidelines and export options."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from webapp.accounts.roles import RATER
from webapp.core.serving import available_models
from webapp.ratings import queue, services
from webapp.ratings.models import Campaign, Prompt, PromptSet
from webapp.ratings.prompt_files import BadFile

T = TypeVar("T")


def first_error(form: forms.Form) -> str:
    """The form's first error as one sentence, for a message or a JSON answer."""
    for field, errors in form.errors.items():
        name = "" if field == forms.forms.NON_FIELD_ERRORS else f"{field}: "
        return f"{name}{errors[0]}"
    return ""


# --- raters ---------------------------------------------------------------------------


class VerdictForm(forms.Form):
    """What a rater sends for a task, as shown (`queue.Verdict`)."""

    choice = forms.TypedChoiceField(
        choices=list(queue.CHOICES.items()),
        coerce=int,
        error_messages={
            "required": "Choose one of the 7 points (1 to 7).",
            "invalid_choice": "Choose one of the 7 points (1 to 7).",
        },
    )
    both_bad = forms.BooleanField(required=False)
    unsafe_left = forms.BooleanField(required=False)
    unsafe_right = forms.BooleanField(required=False)
    rationale = forms.CharField(required=False, max_length=5000)
    active_seconds = forms.FloatField(required=False, min_value=0, max_value=86_399)

    def verdict(self) -> queue.Verdict:
        return queue.Verdict(**self.cleaned_data)


class SkipForm(forms.Form):
    reason = forms.ChoiceField(
        choices=list(queue.SKIP_REASONS.items()),
        error_messages={
            "required": "Give one of the skip reasons.",
            "invalid_choice": "Give one of the skip reasons.",
        },
    )


# --- campaigns ------------------------------------------------------------------------


def categories_by_set() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every prompt set's categories, grouped under the set's name."""
    groups: dict[str, list[tuple[str, str]]] = {}
    rows = (
        Prompt.objects.values_list("prompt_set__name", "category")
        .distinct()
        .order_by("prompt_set__name", "category")
    )
    for set_name, category in rows:
        groups.setdefault(set_name, []).append((category, category))
    return list(groups.items())


ADAPTIVE_SETTINGS = ("k_min", "k_max", "target_ci_width")


class CampaignForm(forms.ModelForm):
    categories = forms.MultipleChoiceField(
        required=False, help_text="None chosen: every category of the set."
    )
    model = forms.ChoiceField(
        label="Model under test", help_text="The models live workers serve."
    )
    baseline = forms.ChoiceField()
    raters = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(),
        required=False,
        help_text="None chosen: every rater.",
    )

    class Meta:
        model = Campaign
        fields = [
            "name",
            "prompt_set",
            "categories",
            "model",
            "baseline",
            "ratings_per_item",
            "adaptive",
            "k_min",
            "k_max",
            "target_ci_width",
            "temperature",
            "top_p",
            "max_new_tokens",
            "seed",
            "guidelines",
            "gold_rate",
            "repeat_rate",
            "daily_cap",
            "lease_seconds",
            "raters",
        ]
        labels = {"ratings_per_item": "K (ratings per item)"}
        help_texts = {
            "adaptive": "Start each item at K min ratings and add one, up to K max, "
            "while its raters disagree or its category's interval is wider than "
            "the target (K above is then K min).",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        served = [(name, name) for name in available_models()]
        self.fields["model"].choices = served
        self.fields["baseline"].choices = served
        self.fields["categories"].choices = categories_by_set()
        for name in ADAPTIVE_SETTINGS:  # only needed with adaptive overlap
            self.fields[name].required = False
        self.fields["raters"].queryset = (
            get_user_model()
            .objects.filter(groups__name=RATER, is_active=True)
            .order_by("username")
        )

    def clean(self) -> dict:
        data = super().clean()
        prompt_set, chosen = data.get("prompt_set"), data.get("categories")
        if prompt_set and chosen:
            known = set(prompt_set.prompts.values_list("category", flat=True))
            if unknown := sorted(set(chosen) - known):
                self.add_error(
                    "categories",
                    f"Not categories of {prompt_set}: {', '.join(unknown)}.",
                )
        self._clean_adaptive(data)
        return data

    def _clean_adaptive(self, data: dict) -> None:
        """Unset adaptive settings take their defaults; an adaptive campaign's
        items start needing K min ratings."""
        for name in ADAPTIVE_SETTINGS:
            if name not in self.errors and data.get(name) is None:
                data[name] = Campaign._meta.get_field(name).default
        k_min, k_max = data.get("k_min"), data.get("k_max")
        if not data.get("adaptive") or k_min is None or k_max is None:
            return
        if k_min > k_max:
            self.add_error("k_max", "K max must be at least K min.")
        else:
            data["ratings_per_item"] = k_min

    def campaign_fields(self) -> dict:
        """The campaign's fields for `services.create_campaign` (raters apart)."""
        return {k: v for k, v in self.cleaned_data.items() if k != "raters"}


class GuidelinesForm(forms.Form):
    guidelines = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 10}),
        help_text="Markdown, shown to raters above each task.",
    )


class ExportForm(forms.Form):
    ties = forms.ChoiceField(
        choices=[("drop", "Drop ties"), ("label", "Keep ties, labelled 0.5")],
        initial="drop",
    )
    per = forms.ChoiceField(
        choices=[
            ("rating", "One line per rating"),
            ("majority", "One line per item (mean of its ratings)"),
        ],
        initial="rating",
    )


# --- uploads --------------------------------------------------------------------------


class UploadForm(forms.Form):
    """A file checked whole: on a bad file `bad_file` holds its bad lines (with
    numbers and fields) and nothing was saved."""

    file = forms.FileField()
    bad_file: BadFile | None = None

    def run_import(self, importer: Callable[[], T]) -> T | None:
        """The importer's result, or None once the errors are on the form."""
        try:
            return importer()
        except BadFile as bad:
            self.bad_file = bad
            self.add_error("file", f"{bad.total} bad line(s); nothing was saved.")
        except ValidationError as exc:
            self.add_error(None, exc)
        return None


class PromptUploadForm(UploadForm):
    set_name = forms.CharField(
        label="Prompt set", max_length=100, help_text="A new set, or one to add to."
    )
    file = forms.FileField(
        help_text="JSON lines or CSV: prompt, and optionally id, category, "
        "reference, tags."
    )
    field_order = ["set_name", "file"]

    def import_prompts(self, user) -> tuple[PromptSet, int] | None:
        """Imports the valid form's file (see `services.import_prompts`)."""
        upload = self.cleaned_data["file"]
        return self.run_import(
            lambda: services.import_prompts(
                self.cleaned_data["set_name"], upload.file, upload.name, user=user
            )
        )


class AnswersUploadForm(UploadForm):
    file = forms.FileField(
        label="Answers file",
        help_text='JSON lines: {"prompt_id", "model", "answer"}.',
    )
