"""Training runs (SFT, reward models, REINFORCE), their metrics, and the model catalog.

A run is a config that a training worker runs on the Celery `training` queue
(`training/tasks.py`); its metrics arrive step by step, and its trained model, once
registered, is a catalog entry that generation workers serve by name.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Run(models.Model):
    class Kind(models.TextChoices):
        SFT = "sft", "Supervised fine-tuning"
        REWARD_MODEL = "reward-model", "Reward model"
        REINFORCE = "reinforce", "REINFORCE with KL"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        STOPPED = "stopped"  # cancelled: its last checkpoint stays, it can resume
        FINISHED = "finished"
        FAILED = "failed"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=100)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED
    )
    # The job's config as `training.jobs.configure` accepts it (output_dir included).
    config = models.JSONField()
    # Where its data came from, in words (an upload, a campaign's export, ...).
    data_source = models.CharField(max_length=300, blank=True)
    step = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField()
    cancel_requested = models.BooleanField(default=False)
    # The training worker running it (its Celery node name), to resume after a crash,
    # and the process of its pool that runs it (the kernel may kill that one alone).
    worker = models.CharField(max_length=200, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    final = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when a campaign launched it (the loop of issue 18 follows these).
    campaign = models.ForeignKey(
        "ratings.Campaign",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def checkpoint(self) -> str:
        """The trained model's directory, once finished."""
        return self.final.get("checkpoint", "")


class Metric(models.Model):
    """One logged step of a run (or its final record, `final=True`)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    values = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]
        indexes = [models.Index(fields=["run", "step"])]


class CatalogModel(models.Model):
    """A model people can use by name: served by generation workers started with
    `--catalog` (policies in the chat and campaigns; reward models score answers)."""

    class Kind(models.TextChoices):
        POLICY = "policy"
        REWARD_MODEL = "reward_model", "reward model"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    path = models.CharField(max_length=500)
    base_model = models.CharField(max_length=300, blank=True)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="models"
    )
    context_length = models.PositiveIntegerField(null=True, blank=True)
    # Reward models: the held-out reward statistics stored with the model.
    reward_mean = models.FloatField(null=True, blank=True)
    reward_std = models.FloatField(null=True, blank=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
