"""Past studies imported as ratings: one JSON object a line, all or nothing.

    {"prompt_id", "prompt", "category", "model_a", "model_b", "answer_a", "answer_b",
     "score", "left", "rater", "seconds"?, "rationale"?, "both_bad"?, "unsafe_a"?,
     "unsafe_b"?}

`score` is an integer from -3 to 3 from `answer_a`'s side and `left` ("a" or "b") says
which answer was shown left. The campaign (source "imported"), its prompt set, prompts,
answers, items and raters are made when missing; a campaign may hold any pairs of
models. The file is read once, as a stream, and checked whole before anything is
saved; every bad line is reported with its number and field. Then everything goes in
with bulk inserts in one transaction (about a million lines a minute: see
`benchmarks/import_ratings.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

import orjson
from django.db import connections, router, transaction

from webapp.core.bulk import bulk_insert
from webapp.ratings.models import (
    Answer,
    Campaign,
    Item,
    Prompt,
    PromptSet,
    Rater,
    Rating,
)
from webapp.ratings.prompt_files import (
    MAX_PROMPT_CHARS,
    MAX_REPORTED_ERRORS,
    BadFile,
    LineError,
    category_error,
)

REQUIRED = (
    "prompt_id", "prompt", "category", "model_a", "model_b", "answer_a", "answer_b",
    "score", "left", "rater",
)  # fmt: skip
OPTIONAL = ("seconds", "rationale", "both_bad", "unsafe_a", "unsafe_b")
FLAGS = ("both_bad", "unsafe_a", "unsafe_b")
NEEDED, ALLOWED = frozenset(REQUIRED), frozenset(REQUIRED + OPTIONAL)


@dataclasses.dataclass
class Parsed:
    """What the file holds, deduplicated, ready for bulk inserts."""

    prompts: dict[str, tuple[str, str, int]] = dataclasses.field(default_factory=dict)
    answers: dict[tuple[str, str, str], str] = dataclasses.field(default_factory=dict)
    items: dict[tuple, int] = dataclasses.field(default_factory=dict)  # -> ratings
    raters: dict[str, None] = dataclasses.field(default_factory=dict)
    # (item key, rater, score, left, both_bad, unsafe_a, unsafe_b, seconds, rationale)
    ratings: list[tuple] = dataclasses.field(default_factory=list)
    # An answer's variant by its text: a study repeats each answer in many lines.
    variants: dict[str, str] = dataclasses.field(default_factory=dict)


def _variant(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _check_line(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each bad field of one line."""
    if not NEEDED <= record.keys() <= ALLOWED:
        missing = [(key, "required") for key in REQUIRED if key not in record]
        unknown = [(key, "unknown field") for key in record if key not in ALLOWED]
        return missing + unknown
    errors = []
    pid = record["prompt_id"]
    if isinstance(pid, bool) or not isinstance(pid, str | int) or not str(pid).strip():
        errors.append(("prompt_id", "must be a non-empty string or an integer"))
    prompt = record["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        errors.append(("prompt", "empty prompt"))
    elif len(prompt) > MAX_PROMPT_CHARS:
        errors.append(("prompt", f"over-long (at most {MAX_PROMPT_CHARS} characters)"))
    if message := category_error(record["category"]):
        errors.append(("category", f"bad category: {message}"))
    for key in ("model_a", "model_b", "rater"):
        value = record[key]
        if not isinstance(value, str) or not value.strip() or len(value) > 150:
            errors.append((key, "must be a name of 1 to 150 characters"))
    if record["model_a"] == record["model_b"]:
        errors.append(("model_b", "the two models must differ"))
    for key in ("answer_a", "answer_b"):
        if not isinstance(record[key], str):
            errors.append((key, "must be text"))
    score = record["score"]
    if isinstance(score, bool) or not isinstance(score, int) or not -3 <= score <= 3:
        errors.append(("score", "must be an integer from -3 to 3"))
    if record["left"] not in ("a", "b"):
        errors.append(("left", 'must be "a" or "b"'))
    seconds = record.get("seconds")
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0
    ):
        errors.append(("seconds", "must be a number >= 0"))
    if not isinstance(record.get("rationale", ""), str):
        errors.append(("rationale", "must be text"))
    for key in FLAGS:
        if not isinstance(record.get(key, False), bool):
            errors.append((key, "must be true or false"))
    return errors


def parse(lines: Iterable[bytes]) -> Parsed:
    """Reads and checks every line; BadFile lists every bad one."""
    parsed, errors, bad = Parsed(), [], 0

    def report(number: int, problems: list[tuple[str, str]]) -> None:
        nonlocal bad
        bad += len(problems)
        room = MAX_REPORTED_ERRORS - len(errors)
        errors.extend(LineError(number, f, m) for f, m in problems[:room])

    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)  # refuses bad UTF-8 and lone surrogates too
        except orjson.JSONDecodeError as exc:
            report(number, [("", _json_error(exc))])
            continue
        if not isinstance(record, dict):
            report(number, [("", "not a JSON object")])
            continue
        if problems := _check_line(record) or _check_consistency(
            parsed, number, record
        ):
            report(number, problems)
            continue
        _add(parsed, number, record)
    if not parsed.ratings and not bad:
        report(0, [("", "the file holds no ratings")])
    if bad:
        raise BadFile(errors, bad)
    return parsed


def _json_error(exc: orjson.JSONDecodeError) -> str:
    if "UTF-8" in exc.msg or "surrogate" in exc.msg:
        return f"not UTF-8 ({exc.msg})"
    return f"not JSON ({exc.msg})"


def _check_consistency(parsed: Parsed, number: int, record: dict) -> list:
    known = parsed.prompts.get(str(record["prompt_id"]).strip())
    if known and (known[0], known[1]) != (record["prompt"].strip(), record["category"]):
        return [("prompt_id", f"its prompt or category differs from line {known[2]}'s")]
    return []


def _add(parsed: Parsed, number: int, record: dict) -> None:
    pid = str(record["prompt_id"]).strip()
    parsed.prompts.setdefault(
        pid, (record["prompt"].strip(), record["category"], number)
    )
    keys = []
    for side in ("a", "b"):
        text = record[f"answer_{side}"]
        variant = parsed.variants.get(text)
        if variant is None:
            variant = parsed.variants[text] = _variant(text)
        key = (pid, record[f"model_{side}"].strip(), variant)
        parsed.answers.setdefault(key, text)
        keys.append(key)
    item = (pid, keys[0], keys[1])
    parsed.items[item] = parsed.items.get(item, 0) + 1
    rater = record["rater"].strip()
    parsed.raters.setdefault(rater)
    seconds = record.get("seconds")
    parsed.ratings.append(
        (
            item,
            rater,
            record["score"],
            record["left"],
            *(record.get(flag, False) for flag in FLAGS),
            None if seconds is None else float(seconds),
            record.get("rationale", "").strip(),
        )
    )


def import_ratings(campaign_name: str, lines: Iterable[bytes]) -> tuple[Campaign, int]:
    """Imports a file's ratings into the named campaign (made when missing).

    Raises:
        BadFile: every bad line; nothing was saved.
        ValueError: the campaign exists and its answers are made here.
    """
    parsed = parse(lines)
    with transaction.atomic():
        campaign = _campaign(campaign_name)
        prompts = _prompts(campaign, parsed)
        answers = _answers(campaign, parsed, prompts)
        items = _items(campaign, parsed, prompts, answers)
        raters = _raters(parsed)
        bulk_insert(
            Rating,
            ["item_id", "rater_id", "score", "left", *FLAGS, "active_seconds",
             "rationale", "source"],
            (
                (items[item], raters[rater], score, left, both_bad, unsafe_a,
                 unsafe_b, seconds, rationale, Rating.Source.IMPORTED)
                for (item, rater, score, left, both_bad, unsafe_a, unsafe_b, seconds,
                     rationale) in parsed.ratings
            ),
        )  # fmt: skip
    return campaign, len(parsed.ratings)


def _campaign(name: str) -> Campaign:
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is None:
        prompt_set = PromptSet.objects.create(
            name=_free_set_name(f"{name} (imported)"),
            description=f"The prompts of the imported campaign {name!r}.",
        )
        return Campaign.objects.create(
            name=name,
            source=Campaign.Source.IMPORTED,
            status=Campaign.Status.CLOSED,
            prompt_set=prompt_set,
            gold_rate=0,
            repeat_rate=0,
        )
    if campaign.source != Campaign.Source.IMPORTED:
        raise ValueError(
            f"campaign {name!r} makes its own answers; import into a new campaign"
        )
    return campaign


def _free_set_name(name: str) -> str:
    candidate, number = name[:90], 2
    while PromptSet.objects.filter(name=candidate).exists():
        candidate, number = f"{name[:90]} {number}", number + 1
    return candidate


def _prompts(campaign: Campaign, parsed: Parsed) -> dict[str, int]:
    """Prompt ids by external id; the campaign's set gets the ones it lacks."""
    prompts = campaign.prompt_set.prompts
    known = set(prompts.values_list("external_id", flat=True))
    bulk_insert(
        Prompt,
        ["prompt_set_id", "external_id", "text", "category"],
        (
            (campaign.prompt_set_id, pid, text, category)
            for pid, (text, category, _line) in parsed.prompts.items()
            if pid not in known
        ),
    )
    return dict(prompts.values_list("external_id", "pk"))


def _answers(campaign, parsed: Parsed, prompts: dict[str, int]) -> dict[tuple, int]:
    """Answer ids by (external prompt id, model, variant); new ones inserted."""
    by_prompt = {pk: pid for pid, pk in prompts.items()}

    def stored() -> dict[tuple, int]:
        rows = Answer.objects.filter(campaign=campaign).values_list(
            "pk", "prompt_id", "model", "variant"
        )
        return {(by_prompt[p], m, v): pk for pk, p, m, v in rows}

    known = stored()
    bulk_insert(
        Answer,
        ["campaign_id", "prompt_id", "model", "variant", "text"],
        (
            (campaign.pk, prompts[pid], model, variant, text)
            for (pid, model, variant), text in parsed.answers.items()
            if (pid, model, variant) not in known
        ),
    )
    return stored()


def _items(campaign, parsed: Parsed, prompts, answers) -> dict[tuple, int]:
    """Item ids by the file's item key; an item's counts cover its ratings."""

    def stored() -> dict[tuple[int, int], tuple[int, int]]:
        rows = Item.objects.filter(campaign=campaign).values_list(
            "pk", "answer_a_id", "answer_b_id", "needed"
        )
        return {(a, b): (pk, needed) for pk, a, b, needed in rows}

    known = stored()
    new, grown = [], []
    for (pid, a, b), count in parsed.items.items():
        pair = (answers[a], answers[b])
        if pair in known:
            grown.append((count, count, count, known[pair][0]))
        else:
            new.append((campaign.pk, prompts[pid], *pair, count, count, count))
    # One statement, many parameter rows (psycopg pipelines them): an update per
    # item through the ORM took minutes for a study added to a big campaign.
    with connections[router.db_for_write(Item)].cursor() as cursor:
        cursor.executemany(
            f"UPDATE {Item._meta.db_table} SET needed = needed + %s, "
            "taken = taken + %s, rated = rated + %s WHERE id = %s",
            grown,
        )
    bulk_insert(
        Item,
        ["campaign_id", "prompt_id", "answer_a_id", "answer_b_id", "needed", "taken",
         "rated"],
        new,
    )  # fmt: skip
    ids = {pair: pk for pair, (pk, _needed) in stored().items()}
    return {key: ids[(answers[key[1]], answers[key[2]])] for key in parsed.items}


def _raters(parsed: Parsed) -> dict[str, int]:
    names = list(parsed.raters)
    Rater.objects.bulk_create(
        [Rater(name=name, kind=Rater.Kind.IMPORTED) for name in names],
        batch_size=1000,
        ignore_conflicts=True,
    )
    found: dict[str, int] = {}
    for start in range(0, len(names), 1000):
        found.update(
            Rater.objects.filter(name__in=names[start : start + 1000]).values_list(
                "name", "pk"
            )
        )
    return found
