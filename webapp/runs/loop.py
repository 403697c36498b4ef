"""The loop the product exists for: ratings → reward model → policy → served → rated.

Each step is what a button of the site does, and `manage.py demo_loop` runs them all:

1. `train_reward_model(campaign)`: a reward-model run on the campaign's preference
   export;
2. `run_rlhf(campaign, reward_run)`: REINFORCE with a KL term from the campaign's
   model (the initial policy, also the reference) with that reward model, on the
   campaign's prompts but the held-out ones;
3. `services.register(run, name)`: the policy in the catalog, served by name;
4. `evaluate(campaign, policy)`: a new campaign of the policy against the initial one
   on the held-out prompts, with the same raters.

Held-out prompts are chosen by prompt (a hash of the id), the same way every time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.core import serving
from webapp.ratings.models import Campaign, Prompt
from webapp.runs import services
from webapp.runs.models import CatalogModel, Run

HELD_OUT_SHARE = 5  # one prompt in five is kept for the evaluation


def held_out(prompt: Prompt, seed: int = 0) -> bool:
    digest = hashlib.sha256(f"{seed}:{prompt.external_id}".encode()).digest()
    return digest[0] % HELD_OUT_SHARE == 0


def campaign_prompts(campaign: Campaign, *, held: bool) -> list[Prompt]:
    """The campaign's prompts kept for training (`held=False`) or evaluation."""
    from webapp.ratings.answer_jobs import campaign_prompts as all_prompts

    return [p for p in all_prompts(campaign) if held_out(p, campaign.seed) == held]


def train_reward_model(
    campaign: Campaign, name: str, settings_: dict[str, Any], user=None
) -> Run:
    """A reward-model run on the campaign's ratings (its preference export)."""
    if not campaign.items.filter(ratings__isnull=False).exists():
        raise ValidationError("The campaign has no ratings to learn from yet.")
    return services.start_run(
        Run.Kind.REWARD_MODEL,
        name,
        {"model": services.model_path(campaign.model), **settings_},
        services.campaign_data(campaign, Run.Kind.REWARD_MODEL),
        data_source=f"ratings of campaign {campaign.name}",
        user=user,
        campaign=campaign,
    )


def _prompt_lines(prompts: list[Prompt]):
    def write(out: IO[str]) -> None:
        for prompt in prompts:
            record = {
                "id": prompt.external_id,
                "prompt": prompt.text,
                "category": prompt.category,
            }
            if prompt.history:  # a conversation: earlier turns, then the prompt
                record = {"messages": _turns(prompt), "category": prompt.category}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")

    return write


def run_rlhf(
    campaign: Campaign,
    reward_run: Run,
    name: str,
    settings_: dict[str, Any],
    user=None,
) -> Run:
    """REINFORCE from the campaign's model with the reward model of `reward_run`, on
    the campaign's prompts that are not held out."""
    if reward_run.kind != Run.Kind.REWARD_MODEL or not reward_run.checkpoint:
        raise ValidationError("Choose a finished reward-model run.")
    prompts = campaign_prompts(campaign, held=False)
    fitting = _fitting(campaign.model, prompts, settings_)
    if not fitting:
        raise ValidationError("No prompt of the campaign fits max_length to train on.")
    left_out = len(prompts) - len(fitting)
    return services.start_run(
        Run.Kind.REINFORCE,
        name,
        {
            "model": services.model_path(campaign.model),
            "reward_model": reward_run.checkpoint,
            **settings_,
        },
        _prompt_lines(fitting),
        data_source=(
            f"prompts of campaign {campaign.name} (held-out ones left out"
            + (f", and {left_out} too long for max_length)" if left_out else ")")
        ),
        user=user,
        campaign=campaign,
    )


def _turns(prompt: Prompt) -> list[dict[str, str]]:
    return [*prompt.history, {"role": "user", "content": prompt.text}]


def _fitting(model: str, prompts: list[Prompt], settings_: dict) -> list[Prompt]:
    """The prompts that leave room for an answer of `max_new_tokens` in
    `max_length` (the trainer's defaults where the settings do not say)."""
    from model_service.chat_format import format_conversation
    from training.config import ReinforceConfig

    defaults = {f.name: f.default for f in dataclasses.fields(ReinforceConfig)}
    room = settings_.get("max_length", defaults["max_length"]) - settings_.get(
        "max_new_tokens", defaults["max_new_tokens"]
    )
    tokenizer = serving.tokenizer_for(model)
    return [
        p for p in prompts if len(format_conversation(tokenizer, _turns(p))) <= room
    ]


def evaluate(
    campaign: Campaign,
    policy: CatalogModel,
    name: str,
    *,
    ratings_per_item: int | None = None,
    user=None,
) -> Campaign:
    """A campaign of the trained policy (A) against the campaign's model (B) on the
    held-out prompts, with the same raters and settings."""
    from webapp.ratings.services import copy_prompts, create_campaign

    prompts = campaign_prompts(campaign, held=True)
    if not prompts:
        raise ValidationError("The campaign has no held-out prompts.")
    with transaction.atomic():
        prompt_set = copy_prompts(
            prompts,
            f"{name} prompts",
            f"The prompts of campaign {campaign.name} held out of RLHF.",
            user,
        )
        evaluation = create_campaign(
            {
                "name": name,
                "prompt_set": prompt_set,
                "model": policy.name,
                "baseline": campaign.model,
                "ratings_per_item": ratings_per_item or campaign.ratings_per_item,
                "temperature": campaign.temperature,
                "top_p": campaign.top_p,
                "max_new_tokens": campaign.max_new_tokens,
                "seed": campaign.seed + 1,
                "guidelines": campaign.guidelines,
                "gold_rate": campaign.gold_rate,
                "repeat_rate": campaign.repeat_rate,
                "daily_cap": campaign.daily_cap,
                "lease_seconds": campaign.lease_seconds,
            },
            raters=campaign.raters.all(),
            user=user,
        )
    return evaluation
