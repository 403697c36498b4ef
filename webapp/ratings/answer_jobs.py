"""A campaign's answers, made by the generation workers or imported, and the items
built from them.

`generate_answers` is the job behind the Celery task: it makes every missing answer of
both models, a window at a time so the worker batches them, and can be killed and run
again at any point without making an answer twice. Each answer's row holds its
generation request id, saved before the request is submitted: a job run again finds
the request and waits for it (adopts it) if a worker has it, submits it under the same
id if no worker ever got it, and submits a new one only if it failed. Each answer keeps
its model, settings, seed, prompt and answer token ids and per-token log-probs, which
the RLHF job re-uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from collections.abc import Callable
from typing import BinaryIO

from django.db import transaction

from model_service import protocol
from model_service.client import GenerationClient, GenerationError, GenerationResult
from model_service.sampling import SamplingParams
from webapp.core import serving
from webapp.core.text import unstorable
from webapp.ratings.models import Answer, Campaign, Item, Prompt
from webapp.ratings.prompt_files import BadFile, LineError

log = logging.getLogger(__name__)

WINDOW = 16  # requests in flight at once: the worker's batch and a few waiting
MAX_SUBMISSIONS = 3  # a transient failure (a worker that died) is tried again
# Failures that trying again will not mend.
FINAL_CODES = {protocol.INVALID_REQUEST, protocol.CONTEXT_LENGTH_EXCEEDED}
# The worse side of gold items: a model's answer to another prompt of the campaign.
GOLD_MODEL = "gold:off-topic"
GOLD_NEEDED = 10_000  # every rater may get each gold item once


def campaign_prompts(campaign: Campaign):
    prompts = campaign.prompt_set.prompts.all()
    if campaign.categories:
        prompts = prompts.filter(category__in=campaign.categories)
    return prompts.order_by("id")


def sides(campaign: Campaign) -> tuple[tuple[str, str], tuple[str, str]]:
    """(model, variant) of answer A and answer B: the model under test and the
    baseline; a model against itself compares two samples of it (other seeds)."""
    b_variant = "b" if campaign.baseline == campaign.model else ""
    return (campaign.model, ""), (campaign.baseline, b_variant)


def answer_seed(campaign: Campaign, prompt: Prompt, model: str, variant: str) -> int:
    """A seed of its own per answer, fixed by the campaign's seed."""
    key = f"{campaign.seed}:{prompt.pk}:{model}:{variant}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") >> 1


def plan_answers(campaign: Campaign) -> int:
    """Pending rows for every answer the campaign lacks; returns how many it needs in
    all. Answers that failed before are pending again."""
    prompts = list(campaign_prompts(campaign))
    Answer.objects.bulk_create(
        [
            Answer(
                campaign=campaign,
                prompt=prompt,
                model=model,
                variant=variant,
                status=Answer.Status.PENDING,
                seed=answer_seed(campaign, prompt, model, variant),
            )
            for prompt in prompts
            for model, variant in sides(campaign)
        ],
        ignore_conflicts=True,
    )
    Answer.objects.filter(campaign=campaign, status=Answer.Status.FAILED).update(
        status=Answer.Status.PENDING, request_id="", error=""
    )
    return len(prompts) * 2


def progress(campaign: Campaign) -> dict[str, int]:
    """Answers done, failed and in all (the campaign page's progress bar)."""
    answers = Answer.objects.filter(campaign=campaign, degraded=False)
    total = campaign_prompts(campaign).count() * 2
    return {
        "done": answers.filter(status=Answer.Status.DONE).count(),
        "failed": answers.filter(status=Answer.Status.FAILED).count(),
        "total": total,
    }


def sampling_params(campaign: Campaign, answer: Answer) -> SamplingParams:
    return SamplingParams(
        temperature=campaign.temperature,
        top_p=campaign.top_p,
        seed=answer.seed,
        max_new_tokens=campaign.max_new_tokens,
    )


def generate_answers(
    campaign_id: int,
    client: GenerationClient | None = None,
    on_progress: Callable[[], None] = lambda: None,
) -> None:
    """Makes every missing answer of the campaign, then builds its items and opens
    it. Safe to kill and to run again."""
    client = client or serving.client()
    campaign = Campaign.objects.get(pk=campaign_id)
    plan_answers(campaign)
    while window := list(
        Answer.objects.filter(campaign=campaign, status=Answer.Status.PENDING)
        .select_related("prompt")
        .order_by("id")[:WINDOW]
    ):
        submitted = [a for a in window if _submit(client, campaign, a)]
        for answer in submitted:
            _collect(client, answer)
        on_progress()
    build_items(campaign)
    if not Answer.objects.filter(
        campaign=campaign, status=Answer.Status.FAILED
    ).exists():
        Campaign.objects.filter(
            pk=campaign.pk, status=Campaign.Status.GENERATING
        ).update(status=Campaign.Status.OPEN)


def _submit(client: GenerationClient, campaign: Campaign, answer: Answer) -> bool:
    """Makes sure the answer's request is with a worker; False if it cannot be."""
    if answer.request_id and client.redis.exists(
        protocol.request_key(answer.request_id)
    ):
        return True  # in flight or ended: adopted
    try:
        workers = client.alive_workers()
        turns = [
            *answer.prompt.history,
            {"role": "user", "content": answer.prompt.text},
        ]
        prompt_ids, _ = serving.exact_prompt(
            answer.model,
            turns,
            max_new_tokens=campaign.max_new_tokens,
            workers=workers,
        )
    except (GenerationError, serving.PromptError) as exc:
        _fail(answer, str(exc))
        return False
    if not answer.request_id:  # saved before the submit: a rerun finds it
        answer.request_id = uuid.uuid4().hex
        answer.submissions += 1
        answer.prompt_token_ids = prompt_ids
        answer.save(update_fields=["request_id", "submissions", "prompt_token_ids"])
    try:
        client.submit(
            answer.model,
            prompt_ids,
            sampling_params(campaign, answer),
            request_id=answer.request_id,
            workers=workers,
        )
    except GenerationError as exc:
        _fail(answer, str(exc))
        return False
    return True


def _collect(client: GenerationClient, answer: Answer) -> None:
    try:
        result = client.wait(answer.request_id)
    except GenerationError as exc:
        if exc.code in FINAL_CODES or answer.submissions >= MAX_SUBMISSIONS:
            _fail(answer, str(exc))
        else:  # try again under a new request
            Answer.objects.filter(pk=answer.pk).update(request_id="")
        return
    _save(answer, result)


def _save(answer: Answer, result: GenerationResult) -> None:
    Answer.objects.filter(pk=answer.pk).update(
        status=Answer.Status.DONE,
        text=result.text,
        params=result.params.to_dict(),
        seed=result.seed,
        token_ids=result.token_ids,
        logprobs=result.logprobs,
        finish_reason=result.finish_reason,
        error="",
    )


def _fail(answer: Answer, message: str) -> None:
    log.warning("answer %s failed: %s", answer.pk, message)
    Answer.objects.filter(pk=answer.pk).update(
        status=Answer.Status.FAILED, error=message
    )


# --- items ----------------------------------------------------------------------------


def build_items(campaign: Campaign) -> int:
    """An item per prompt whose two answers are done (model under test as A), plus
    the gold items; items already there stay. Returns how many items it has."""
    done = Answer.objects.filter(
        campaign=campaign, status=Answer.Status.DONE, degraded=False
    )
    by_prompt: dict[int, dict[tuple[str, str], Answer]] = {}
    for answer in done:
        key = answer.model, answer.variant
        by_prompt.setdefault(answer.prompt_id, {})[key] = answer
    side_a, side_b = sides(campaign)
    pairs = [
        (prompt_id, answers[side_a], answers[side_b])
        for prompt_id, answers in sorted(by_prompt.items())
        if side_a in answers and side_b in answers
    ]
    with transaction.atomic():
        Item.objects.bulk_create(
            [
                Item(
                    campaign=campaign,
                    prompt_id=prompt_id,
                    answer_a=a,
                    answer_b=b,
                    needed=campaign.ratings_per_item,
                )
                for prompt_id, a, b in pairs
            ],
            ignore_conflicts=True,
        )
        _build_gold(campaign, [a for _prompt, a, _b in pairs])
    return campaign.items.count()


def _build_gold(campaign: Campaign, answers: list[Answer]) -> None:
    """Gold items: a model answer against the same model's answer to another prompt
    (off topic, so A is known to be better), for `gold_rate` of the prompts."""
    count = round(campaign.gold_rate * len(answers))
    if count == 0 or len(answers) < 2 or campaign.items.exclude(gold="").exists():
        return
    rng = random.Random(campaign.seed)
    for index in sorted(rng.sample(range(len(answers)), count)):
        answer, other = answers[index], answers[(index + 1) % len(answers)]
        worse = Answer.objects.create(
            campaign=campaign,
            prompt_id=answer.prompt_id,
            model=GOLD_MODEL,
            text=other.text,
            degraded=True,
        )
        Item.objects.create(
            campaign=campaign,
            prompt_id=answer.prompt_id,
            answer_a=answer,
            answer_b=worse,
            gold="a",
            needed=GOLD_NEEDED,
        )


# --- answers made elsewhere -----------------------------------------------------------


def import_answers(campaign: Campaign, stream: BinaryIO) -> int:
    """Answers from a JSON-lines file (`prompt_id`, `model`, `answer`), all or none;
    then the campaign's items. Returns how many answers it saved."""
    prompts = {p.external_id: p for p in campaign.prompt_set.prompts.all()}
    errors, rows = [], {}
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        record, error = _answer_record(number, raw, prompts)
        if error:
            errors.append(error)
        else:
            rows[(record[0].pk, record[1])] = record
    if errors or not rows:
        raise BadFile(
            errors or [LineError(0, "", "the file holds no answers")], len(errors) or 1
        )
    with transaction.atomic():
        for prompt, model, text in rows.values():
            Answer.objects.update_or_create(
                campaign=campaign,
                prompt=prompt,
                model=model,
                variant="",
                defaults={"text": text, "status": Answer.Status.DONE, "error": ""},
            )
        build_items(campaign)
    return len(rows)


def _answer_record(number: int, raw: bytes, prompts: dict[str, Prompt]):
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, LineError(number, "", "not UTF-8")
    except json.JSONDecodeError as exc:
        return None, LineError(number, "", f"not JSON ({exc.msg})")
    if not isinstance(record, dict):
        return None, LineError(number, "", "not a JSON object")
    prompt = prompts.get(str(record.get("prompt_id")))
    if prompt is None:
        return None, LineError(
            number, "prompt_id", "no such prompt in the campaign's set"
        )
    model, text = record.get("model"), record.get("answer")
    if not isinstance(model, str) or not model.strip() or len(model) > 300:
        return None, LineError(number, "model", "a model name is required")
    if not isinstance(text, str):
        return None, LineError(number, "answer", "must be text")
    if problem := unstorable([model, text]):
        return None, LineError(number, "", f"holds {problem}")
    return (prompt, model.strip(), text), None
