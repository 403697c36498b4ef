"""Past studies imported as ratings: one JSON object a line, all or nothing.

    {"prompt_id", "prompt", "category", "model_a", "model_b", "answer_a", "answer_b",
     "score", "left", "rater", "seconds"?, "rationale"?, "both_bad"?, "unsafe_a"?,
     "unsafe_b"?}

`score` is an integer from -3 to 3 from `answer_a`'s side and `left` ("a" or "b") says
which answer was shown left. The campaign (source "imported"), its prompt set, prompts,
answers, items and raters are made when missing; a campaign may hold any pairs of
models. All or nothing: every bad line is reported with its number and field, and a
file with any saves nothing.

The file is read twice, as a stream (so it must be seekable). The first pass indexes
what the good lines refer to (prompts, answers, pairs with their counts of ratings);
the database stores those while the second pass checks every line against them, and
then the ratings, all in one transaction: on PostgreSQL the check costs no time of its
own (see `benchmarks/import_ratings.py`).
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import gc
import hashlib
from collections.abc import Iterable
from typing import Any, BinaryIO

import orjson
from django.db import connections, router, transaction

from webapp.core.bulk import bulk_insert, inserting
from webapp.core.text import NUL
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
ITEM_FIELDS = ("campaign_id", "prompt_id", "answer_a_id", "answer_b_id", "needed",
               "taken", "rated")  # fmt: skip
RATING_FIELDS = ("item_id", "rater_id", "score", "left", *FLAGS, "active_seconds",
                 "rationale", "source")  # fmt: skip


@dataclasses.dataclass
class Index:
    """What a file's lines refer to, deduplicated, read before they are checked."""

    # By external id: (text, category, the first line with that id).
    prompts: dict[str, tuple[str, str, int]] = dataclasses.field(default_factory=dict)
    # Each answer's number by (external prompt id, model, variant); its text.
    answers: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    texts: list[str] = dataclasses.field(default_factory=list)
    # Each item's number by its pair of answer numbers; how many lines rate it.
    items: dict[tuple[int, int], int] = dataclasses.field(default_factory=dict)
    counts: list[int] = dataclasses.field(default_factory=list)
    # The item number of each line (-1: a line the check will refuse).
    item_of_line: array.array = dataclasses.field(
        default_factory=lambda: array.array("q")
    )
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
    # (orjson refuses lone surrogates, the other text no column holds.)
    errors.extend(
        (key, f"holds {NUL}")
        for key, value in record.items()
        if isinstance(value, str) and "\x00" in value
    )
    return errors


def index(lines: Iterable[bytes]) -> Index:
    """The first pass: the prompt, answers and item of each line whose fields are
    good (the second pass names the bad ones, and finds the lines that contradict
    an earlier one: each prompt id is indexed by its first good line)."""
    found = Index()
    with _no_cycle_collection():
        for raw in lines:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                record = None
            good = isinstance(record, dict) and not _check_line(record)
            found.item_of_line.append(_index_line(found, record) if good else -1)
    return found


def _index_line(found: Index, record: dict) -> int:
    pid = str(record["prompt_id"]).strip()
    if pid not in found.prompts:
        line = len(found.item_of_line) + 1
        found.prompts[pid] = (record["prompt"].strip(), record["category"], line)
    pair = (_answer(found, pid, record, "a"), _answer(found, pid, record, "b"))
    number = found.items.get(pair)
    if number is None:
        number = found.items[pair] = len(found.counts)
        found.counts.append(1)
    else:
        found.counts[number] += 1
    return number


def _answer(found: Index, pid: str, record: dict, side: str) -> int:
    text = record["answer_" + side]
    variant = found.variants.get(text)
    if variant is None:
        variant = found.variants[text] = _variant(text)
    key = (pid, record["model_" + side].strip(), variant)
    number = found.answers.get(key)
    if number is None:
        number = found.answers[key] = len(found.texts)
        found.texts.append(text)
    return number


def check(lines: Iterable[bytes], found: Index) -> list[tuple]:
    """The second pass: every line checked; BadFile lists every bad one.

    Returns (item number, rater, score, left, both_bad, unsafe_a, unsafe_b, seconds,
    rationale) for each rating.
    """
    ratings, errors, bad = [], [], 0

    def report(number: int, problems: list[tuple[str, str]]) -> None:
        nonlocal bad
        bad += len(problems)
        room = MAX_REPORTED_ERRORS - len(errors)
        errors.extend(LineError(number, f, m) for f, m in problems[:room])

    with _no_cycle_collection():
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)  # refuses bad UTF-8 and lone surrogates
            except orjson.JSONDecodeError as exc:
                report(number, [("", _json_error(exc))])
                continue
            if not isinstance(record, dict):
                report(number, [("", "not a JSON object")])
                continue
            item = found.item_of_line[number - 1]
            # The index checked every line's fields: only the refused ones again.
            if problems := (item < 0 and _check_line(record)) or _check_consistency(
                found, number, record
            ):
                report(number, problems)
                continue
            ratings.append(_rating(item, record))
    if not ratings and not bad:
        report(0, [("", "the file holds no ratings")])
    if bad:
        raise BadFile(errors, bad)
    return ratings


@contextlib.contextmanager
def _no_cycle_collection():
    """A pass makes millions of small containers and no cycles: the collector's
    passes over them were a fifth of its time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _json_error(exc: orjson.JSONDecodeError) -> str:
    if "UTF-8" in exc.msg or "surrogate" in exc.msg:
        return f"not UTF-8 ({exc.msg})"
    return f"not JSON ({exc.msg})"


def _check_consistency(found: Index, number: int, record: dict) -> list:
    known = found.prompts[str(record["prompt_id"]).strip()]
    if (known[0], known[1]) != (record["prompt"].strip(), record["category"]):
        return [("prompt_id", f"its prompt or category differs from line {known[2]}'s")]
    return []


def _rating(item: int, record: dict) -> tuple:
    seconds = record.get("seconds")
    return (
        item,
        record["rater"].strip(),
        record["score"],
        record["left"],
        *(record.get(flag, False) for flag in FLAGS),
        None if seconds is None else float(seconds),
        record.get("rationale", "").strip(),
    )


def import_ratings(campaign_name: str, source: BinaryIO) -> tuple[Campaign, int]:
    """Imports a file's ratings into the named campaign (made when missing).

    Raises:
        BadFile: every bad line; nothing was saved.
        ValueError: the campaign exists and its answers are made here.
    """
    found = index(source)
    source.seek(0)
    with transaction.atomic():
        campaign = _campaign(campaign_name)
        prompts = _prompts(campaign, found)
        answers = _answers(campaign, found, prompts)
        new, grown = _items(campaign, found, prompts, answers)
        _grow(grown)
        with inserting(Item, ITEM_FIELDS) as write:
            write(new)
            ratings = check(source, found)  # while the server stores the items
        items = _item_ids(campaign, answers, found)
        raters = _raters({rating[1] for rating in ratings})
        bulk_insert(
            Rating,
            RATING_FIELDS,
            (
                (items[item], raters[rater], *rest, Rating.Source.IMPORTED)
                for item, rater, *rest in ratings
            ),
        )
    return campaign, len(ratings)


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


def _prompts(campaign: Campaign, found: Index) -> dict[str, int]:
    """Prompt ids by external id; the campaign's set gets the ones it lacks."""
    prompts = campaign.prompt_set.prompts
    known = set(prompts.values_list("external_id", flat=True))
    bulk_insert(
        Prompt,
        ["prompt_set_id", "external_id", "text", "category"],
        (
            (campaign.prompt_set_id, pid, text, category)
            for pid, (text, category, _line) in found.prompts.items()
            if pid not in known
        ),
    )
    return dict(prompts.values_list("external_id", "pk"))


def _answers(campaign, found: Index, prompts: dict[str, int]) -> list[int]:
    """Answer ids by answer number; the campaign gets the ones it lacks."""
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
            (campaign.pk, prompts[pid], model, variant, found.texts[number])
            for (pid, model, variant), number in found.answers.items()
            if (pid, model, variant) not in known
        ),
    )
    ids = stored()
    return [ids[key] for key in found.answers]


def _stored_items(campaign) -> dict[tuple[int, int], int]:
    """The campaign's item ids by their pair of answer ids."""
    rows = Item.objects.filter(campaign=campaign).values_list(
        "pk", "answer_a_id", "answer_b_id"
    )
    return {(a, b): pk for pk, a, b in rows}


def _items(campaign, found: Index, prompts, answers) -> tuple[list, list]:
    """Rows of the items the campaign lacks, and count updates of those it has."""
    known, keys = _stored_items(campaign), list(found.answers)
    new, grown = [], []
    for (a, b), number in found.items.items():
        count, pair = found.counts[number], (answers[a], answers[b])
        if pair in known:
            grown.append((count, count, count, known[pair]))
        else:
            new.append((campaign.pk, prompts[keys[a][0]], *pair, count, count, count))
    return new, grown


def _grow(grown: list[tuple[int, int, int, int]]) -> None:
    # One statement, many parameter rows (psycopg pipelines them): an update per
    # item through the ORM took minutes for a study added to a big campaign.
    with connections[router.db_for_write(Item)].cursor() as cursor:
        cursor.executemany(
            f"UPDATE {Item._meta.db_table} SET needed = needed + %s, "
            "taken = taken + %s, rated = rated + %s WHERE id = %s",
            grown,
        )


def _item_ids(campaign, answers: list[int], found: Index) -> list[int]:
    """Item ids by item number."""
    ids = _stored_items(campaign)
    return [ids[answers[a], answers[b]] for a, b in found.items]


def _raters(names: set[str]) -> dict[str, int]:
    names = list(names)
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
