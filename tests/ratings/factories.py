"""Plain factories for the ratings tests: a campaign with its answers written here
(as an import would), so the queue can be tested without generating anything."""

from webapp.ratings.answer_jobs import build_items
from webapp.ratings.models import Answer, Campaign, Prompt, PromptSet

MODEL = "model-under-test-x7"  # distinctive names: the blindness test greps for them
BASELINE = "baseline-model-q3"


def make_prompt_set(name: str = "set", prompts: int = 4, categories=("chat",)):
    prompt_set = PromptSet.objects.create(name=name)
    Prompt.objects.bulk_create(
        Prompt(
            prompt_set=prompt_set,
            external_id=f"p{i}",
            text=f"Prompt number {i}: say something about item {i}.",
            category=categories[i % len(categories)],
        )
        for i in range(prompts)
    )
    return prompt_set


def make_campaign(
    name: str = "campaign",
    prompts: int = 4,
    ratings_per_item: int = 2,
    status: str = Campaign.Status.OPEN,
    **fields,
) -> Campaign:
    """An open campaign whose answers are written here; gold and repeats off unless
    asked for."""
    prompt_set = make_prompt_set(
        f"{name}-prompts", prompts, fields.pop("categories", ("chat",))
    )
    campaign = Campaign.objects.create(
        name=name,
        prompt_set=prompt_set,
        model=MODEL,
        baseline=BASELINE,
        ratings_per_item=ratings_per_item,
        status=status,
        gold_rate=fields.pop("gold_rate", 0.0),
        repeat_rate=fields.pop("repeat_rate", 0.0),
        **fields,
    )
    for prompt in prompt_set.prompts.all():
        for model in (MODEL, BASELINE):
            Answer.objects.create(
                campaign=campaign,
                prompt=prompt,
                model=model,
                text=f"Answer of {model} to {prompt.external_id}.",
            )
    build_items(campaign)
    return campaign
