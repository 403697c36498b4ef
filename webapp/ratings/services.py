"""What researchers do to prompt sets and campaigns; every write goes through here.

Each function checks its input first and changes the database in one transaction;
work that follows a change (making a campaign's answers) is queued after the commit.
"""

from __future__ import annotations

from typing import BinaryIO

from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.ratings import prompt_files
from webapp.ratings.models import Campaign, Prompt, PromptSet


def import_prompts(
    set_name: str, stream: BinaryIO, filename: str, user=None
) -> tuple[PromptSet, int]:
    """Adds a file's prompts to the named set (made if missing), all or none.

    Raises:
        prompt_files.BadFile: every bad line; nothing was saved.
    """
    set_name = set_name.strip()
    if not set_name or len(set_name) > 100:
        raise ValidationError("A prompt set needs a name of 1 to 100 characters.")
    existing = PromptSet.objects.filter(name=set_name).first()
    taken = existing.prompts.values_list("external_id", flat=True) if existing else []
    rows = prompt_files.read_prompts(stream, filename, taken_ids=taken)
    with transaction.atomic():
        prompt_set = existing or PromptSet.objects.create(
            name=set_name, created_by=user
        )
        Prompt.objects.bulk_create(
            [
                Prompt(
                    prompt_set=prompt_set,
                    external_id=row.external_id,
                    text=row.text,
                    category=row.category,
                    reference=row.reference,
                    tags=row.tags,
                )
                for row in rows
            ],
            batch_size=2000,
        )
    return prompt_set, len(rows)


def copy_prompts(prompts, name: str, description: str, user=None) -> PromptSet:
    """A new prompt set holding copies of `prompts` (for a campaign on some of a
    set's prompts: held-out ones, the first few)."""
    prompt_set = PromptSet.objects.create(
        name=name, description=description, created_by=user
    )
    Prompt.objects.bulk_create(
        Prompt(
            prompt_set=prompt_set,
            external_id=p.external_id,
            text=p.text,
            category=p.category,
            reference=p.reference,
            tags=p.tags,
            history=p.history,
        )
        for p in prompts
    )
    return prompt_set


def create_campaign(fields: dict, raters=(), user=None) -> Campaign:
    """A campaign whose answers the generation workers start making after the
    commit (`fields` are a cleaned form's). A model against itself compares two
    samples of it, with other seeds (as RLHF preference data is collected)."""
    from webapp.ratings.tasks import generate_answers

    with transaction.atomic():
        campaign = Campaign.objects.create(created_by=user, **fields)
        campaign.raters.set(raters)
        transaction.on_commit(lambda: generate_answers.delay(campaign.pk))
    return campaign


def resume_answers(campaign: Campaign) -> None:
    """Queues the answer job again (it makes only what is missing)."""
    from webapp.ratings.tasks import generate_answers

    if campaign.source != Campaign.Source.GENERATED:
        raise ValidationError("Only a campaign whose answers are made here resumes.")
    transaction.on_commit(lambda: generate_answers.delay(campaign.pk))


def set_status(campaign: Campaign, status: str) -> None:
    """Closes a campaign (raters get none of its items) or opens it again."""
    if status not in (Campaign.Status.OPEN, Campaign.Status.CLOSED):
        raise ValidationError("A campaign is opened or closed.")
    if status == Campaign.Status.OPEN and not campaign.items.exists():
        raise ValidationError("The campaign has no items to rate yet.")
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    campaign.status = status


def set_guidelines(campaign: Campaign, text: str) -> None:
    if len(text) > 50_000:
        raise ValidationError("Guidelines are at most 50,000 characters.")
    Campaign.objects.filter(pk=campaign.pk).update(guidelines=text)
    campaign.guidelines = text
