"""The rating store: prompt sets, campaigns, answers, the side-by-side items raters
judge, their leases and their ratings.

A campaign compares a model under test (`model_a` of its items) with a baseline
(`model_b`) on a prompt set; an imported campaign may hold any pairs. An item is one
prompt with two answers; a rater gets it through an assignment (a lease), sees the
answers in the order the assignment says (`left`), and gives a rating. Every score is
stored from `answer_a`'s side: 3 A much better ... 0 about the same ... -3 B much
better, whatever side A was shown on. Nothing a rater sees names a model: assignments
are reached by a random token, and answers by side.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q


class PromptSet(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    builtin = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    prompt_set = models.ForeignKey(
        PromptSet, on_delete=models.CASCADE, related_name="prompts"
    )
    # The id the file gave it (or its line number): unique in its set.
    external_id = models.CharField(max_length=100)
    text = models.TextField()
    category = models.CharField(max_length=50, default="general")
    reference = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    # Earlier turns, for a prompt that continues a conversation: [{role, content}].
    history = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt_set", "external_id"], name="unique_prompt_id_in_set"
            )
        ]
        indexes = [models.Index(fields=["prompt_set", "category"])]

    def __str__(self) -> str:
        return f"{self.external_id}: {self.text[:40]}"


class Campaign(models.Model):
    class Status(models.TextChoices):
        GENERATING = "generating"  # its answers are being made
        OPEN = "open"  # raters get its items
        CLOSED = "closed"

    class Source(models.TextChoices):
        GENERATED = "generated"  # answers made here by the generation workers
        IMPORTED = "imported"  # a past study's ratings, imported
        CHAT = "chat"  # votes from the chat's Compare

    name = models.CharField(max_length=100, unique=True)
    source = models.CharField(
        max_length=10, choices=Source.choices, default=Source.GENERATED
    )
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.GENERATING
    )
    prompt_set = models.ForeignKey(
        PromptSet, on_delete=models.PROTECT, related_name="campaigns"
    )
    # Empty: every category of the set.
    categories = models.JSONField(default=list, blank=True)
    model = models.CharField("model under test", max_length=300, blank=True)
    baseline = models.CharField(max_length=300, blank=True)
    ratings_per_item = models.PositiveIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    temperature = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    top_p = models.FloatField(
        default=0.95, validators=[MinValueValidator(0.01), MaxValueValidator(1.0)]
    )
    max_new_tokens = models.PositiveIntegerField(
        default=256, validators=[MinValueValidator(1), MaxValueValidator(4096)]
    )
    seed = models.PositiveIntegerField(default=0)
    guidelines = models.TextField(blank=True, help_text="Markdown, shown to raters.")
    gold_rate = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0), MaxValueValidator(0.5)]
    )
    repeat_rate = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0), MaxValueValidator(0.5)]
    )
    daily_cap = models.PositiveIntegerField(
        default=200, help_text="Most ratings one rater gives this campaign a day."
    )
    lease_seconds = models.PositiveIntegerField(
        default=600, validators=[MinValueValidator(30), MaxValueValidator(86_400)]
    )
    # Adaptive overlap (`webapp.evals.overlap`): items start needing `k_min` ratings
    # and get one more place, up to `k_max`, while their raters disagree or their
    # category's win-rate interval is wider than `target_ci_width`.
    adaptive = models.BooleanField("adaptive overlap", default=False)
    k_min = models.PositiveIntegerField(
        "K min", default=2, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    k_max = models.PositiveIntegerField(
        "K max", default=5, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    target_ci_width = models.FloatField(
        "target interval width",
        default=0.1,
        validators=[MinValueValidator(0.01), MaxValueValidator(1.0)],
        help_text="Width of a category's 95% interval (a fraction) to aim at.",
    )
    # Raters who may take its items; none listed: every rater.
    raters = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="rating_campaigns"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class Answer(models.Model):
    """One model's answer to one prompt, with what it takes to reproduce it."""

    class Status(models.TextChoices):
        PENDING = "pending"  # submitted (or about to be) to a generation worker
        DONE = "done"
        FAILED = "failed"

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="answers"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=300)
    # One answer per (prompt, model) for a generated campaign; an imported one may
    # hold several samples, told apart by their text's hash.
    variant = models.CharField(max_length=64, default="")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DONE)
    text = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    prompt_token_ids = models.JSONField(default=list, blank=True)
    token_ids = models.JSONField(default=list, blank=True)
    logprobs = models.JSONField(default=list, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    # The generation request now in flight, and how many were ever submitted (a
    # resumed job adopts a request in flight instead of submitting another).
    request_id = models.CharField(max_length=64, blank=True)
    submissions = models.PositiveIntegerField(default=0)
    # A gold item's deliberately worse side: never a model's own answer.
    degraded = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "prompt", "model", "variant"],
                name="one_answer_per_prompt_model_variant",
            )
        ]


class Item(models.Model):
    """One prompt and two answers, to be rated `needed` times."""

    # Indexed by (campaign, taken) and the unique pair, which start with it.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="items", db_index=False
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    answer_a = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="+")
    answer_b = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="+")
    # Gold: the better side is known ("a" or "b"); never counted in win rates.
    gold = models.CharField(max_length=1, blank=True)
    needed = models.PositiveIntegerField()
    # Live leases plus ratings (not counting swapped repeats): what the queue may hand
    # out is `needed - taken`, changed only by conditional updates.
    taken = models.PositiveIntegerField(default=0)
    rated = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "answer_a", "answer_b"], name="unique_item_pair"
            ),
            models.CheckConstraint(
                condition=Q(taken__lte=F("needed")), name="never_over_assigned"
            ),
        ]
        indexes = [models.Index(fields=["campaign", "taken"])]


class Rater(models.Model):
    """Who gives ratings: a person (with a user account), an imported study's rater,
    or (later) an automatic judge or a simulated rater."""

    class Kind(models.TextChoices):
        HUMAN = "human"
        IMPORTED = "imported"
        JUDGE = "judge"
        SIMULATED = "simulated"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rater",
    )
    name = models.CharField(max_length=150, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.HUMAN)

    def __str__(self) -> str:
        return self.name


class Assignment(models.Model):
    """An item leased to a rater: reached by its random token, it comes back to the
    queue if no rating arrives before it expires."""

    class Status(models.TextChoices):
        LEASED = "leased"
        RATED = "rated"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="+")
    # Which answer the rater sees on the left: "a" or "b".
    left = models.CharField(max_length=1)
    # A swapped repeat of this earlier rating by the same rater (never announced).
    repeat_of = models.OneToOneField(
        "Rating",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="repeated_by",
    )
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.LEASED
    )
    skip_reason = models.CharField(max_length=200, blank=True)
    leased_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            # A rater never gets the same item twice, but for one swapped repeat.
            models.UniqueConstraint(
                fields=["item", "rater"],
                condition=Q(repeat_of__isnull=True),
                name="one_assignment_per_item_and_rater",
            )
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"]),
            models.Index(fields=["rater", "status"]),
        ]

    @property
    def is_repeat(self) -> bool:
        return self.repeat_of_id is not None


class Rating(models.Model):
    class Source(models.TextChoices):
        CAMPAIGN = "campaign"
        CHAT = "chat"
        IMPORTED = "imported"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="ratings")
    # Indexed by (rater, created_at), which starts with it.
    rater = models.ForeignKey(
        Rater, on_delete=models.CASCADE, related_name="ratings", db_index=False
    )
    # None for imported ratings; one rating per assignment however often it is sent.
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.CASCADE
    )
    score = models.SmallIntegerField(
        validators=[MinValueValidator(-3), MaxValueValidator(3)]
    )
    left = models.CharField(max_length=1)
    both_bad = models.BooleanField(default=False)
    unsafe_a = models.BooleanField(default=False)
    unsafe_b = models.BooleanField(default=False)
    rationale = models.TextField(blank=True)
    active_seconds = models.FloatField(null=True, blank=True)
    source = models.CharField(
        max_length=10, choices=Source.choices, default=Source.CAMPAIGN
    )
    gold = models.BooleanField(default=False)
    repeat = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["rater", "created_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(score__gte=-3) & Q(score__lte=3), name="score_in_range"
            )
        ]
