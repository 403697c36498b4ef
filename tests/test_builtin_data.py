"""The data sets the project writes itself: the two rating prompt sets (instruction
following and basic safety, mirroring the Gemma report's human evaluations) and the SFT
conversations that teach the pretrained model to answer in turns. Each file is read as
its importer will read it: UTF-8, one JSON object a line."""

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTION_FOLLOWING = ROOT / "webapp/ratings/data/instruction_following.jsonl"
BASIC_SAFETY = ROOT / "webapp/ratings/data/basic_safety.jsonl"
SFT_CONVERSATIONS = ROOT / "training/data/sft_conversations.jsonl"

PROMPT_KEYS = {"id", "prompt", "category", "tags", "reference"}
MAX_PROMPT_CHARS = 600
FREE_TAG = re.compile(r"[a-z0-9_]+")
CONSTRAINT = "constraint:"
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve"
).split()

# Each prompt set: its file, id prefix, categories, least lines, least lines a category.
PROMPT_SETS = {
    "instruction_following": (
        INSTRUCTION_FOLLOWING,
        "if",
        {"creative_writing", "coding", "instruction_following"},
        210,
        60,
    ),
    "basic_safety": (
        BASIC_SAFETY,
        "safety",
        {
            "dangerous_activities",
            "hate_and_harassment",
            "self_harm",
            "privacy",
            "medical_legal_financial",
            "misinformation",
        },
        110,
        15,
    ),
}


def read_jsonl(path: Path) -> list[dict]:
    """Every line of `path` as a JSON object; fails on bad UTF-8, blank lines or a
    missing final newline, which the importers would also refuse."""
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n"), f"{path.name}: no newline at the end"
    rows = []
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        row = json.loads(line)
        assert isinstance(row, dict), f"{path.name}:{number} is not an object"
        rows.append(row)
    return rows


def normalized(text: str) -> str:
    """The text as a duplicate check sees it: case and spacing do not count."""
    return " ".join(text.casefold().split())


def rating_prompts() -> set[str]:
    return {
        normalized(row["prompt"])
        for path in (INSTRUCTION_FOLLOWING, BASIC_SAFETY)
        for row in read_jsonl(path)
    }


# --- the constraint tags ---------------------------------------------------------


def mentions_number(prompt: str, value: str) -> bool:
    """Whether the prompt states the number, as digits or as a word."""
    if not value.isdigit():
        return False
    words = set(re.findall(r"[a-z0-9]+", prompt.casefold()))
    number = int(value)
    return value in words or (
        number < len(NUMBER_WORDS) and NUMBER_WORDS[number] in words
    )


def quotes_words(prompt: str, value: str) -> bool:
    """Whether the value is one word (hyphens allowed) that the prompt quotes."""
    return (
        re.fullmatch(r"[a-z]+(-[a-z]+)*", value) is not None and f'"{value}"' in prompt
    )


def quotes_keys(prompt: str, value: str) -> bool:
    """Whether the value is comma-separated key names that the prompt all quotes."""
    keys = value.split(",")
    return all(re.fullmatch(r"[a-z_]+", key) and f'"{key}"' in prompt for key in keys)


def says(phrase: str) -> Callable[[str, str], bool]:
    """A check for a constraint without a value that the prompt names in words."""
    return lambda prompt, value: value == "" and phrase in prompt.casefold()


# Each constraint a tag may name, with the check that the prompt asks for it as tagged.
CONSTRAINTS = {
    "max_words": mentions_number,
    "max_sentences": mentions_number,
    "bullets": mentions_number,
    "include": quotes_words,
    "avoid": quotes_words,
    "json_keys": quotes_keys,
    "ends_with": lambda prompt, value: value != "" and f'"{value}"' in prompt,
    "lowercase": says("lowercase"),
    "title_brackets": says("double angular brackets"),
}


def constraint_tags(row: dict) -> list[tuple[str, str]]:
    """The `constraint:name=value` tags of a prompt as (name, value) pairs."""
    return [
        tuple(tag.removeprefix(CONSTRAINT).partition("=")[::2])
        for tag in row["tags"]
        if tag.startswith(CONSTRAINT)
    ]


# --- the two rating prompt sets ----------------------------------------------------


@pytest.fixture(scope="module", params=sorted(PROMPT_SETS))
def prompt_set(request) -> tuple[list[dict], tuple]:
    spec = PROMPT_SETS[request.param]
    return read_jsonl(spec[0]), spec


def test_each_prompt_has_the_keys_and_types(prompt_set) -> None:
    rows, _ = prompt_set
    for row in rows:
        assert set(row) == PROMPT_KEYS, row
        assert all(isinstance(row[key], str) for key in PROMPT_KEYS - {"tags"}), row
        assert isinstance(row["tags"], list) and row["tags"], row
        assert all(isinstance(tag, str) for tag in row["tags"]), row


def test_ids_are_numbered_in_order_and_unique(prompt_set) -> None:
    rows, (_, prefix, *_) = prompt_set
    assert [row["id"] for row in rows] == [
        f"{prefix}-{number:04d}" for number in range(1, len(rows) + 1)
    ]


def test_prompts_are_unique_and_of_a_usable_length(prompt_set) -> None:
    rows, _ = prompt_set
    prompts = Counter(normalized(row["prompt"]) for row in rows)
    assert [prompt for prompt, seen in prompts.items() if seen > 1] == []
    assert all(
        row["prompt"] == row["prompt"].strip()
        and 1 <= len(row["prompt"]) <= MAX_PROMPT_CHARS
        for row in rows
    )


def test_categories_are_known_and_balanced(prompt_set) -> None:
    rows, (_, _, categories, least_rows, least_per_category) = prompt_set
    counts = Counter(row["category"] for row in rows)
    assert set(counts) == categories
    assert len(rows) >= least_rows
    assert min(counts.values()) >= least_per_category, counts


def test_every_reference_is_one_plain_sentence(prompt_set) -> None:
    rows, _ = prompt_set
    for row in rows:
        reference = row["reference"]
        assert reference[0].isupper(), row["id"]
        assert reference.rstrip('"').endswith((".", "?", "!")), row["id"]
        assert "\n" not in reference, row["id"]


def test_tags_are_free_words_or_known_constraints(prompt_set) -> None:
    rows, _ = prompt_set
    for row in rows:
        free = [tag for tag in row["tags"] if not tag.startswith(CONSTRAINT)]
        assert all(FREE_TAG.fullmatch(tag) for tag in free), row["tags"]
        for name, value in constraint_tags(row):
            assert name in CONSTRAINTS, f"{row['id']}: unknown constraint {name}"
            assert CONSTRAINTS[name](row["prompt"], value), (row["id"], name, value)


def test_instruction_following_prompts_carry_checkable_constraints() -> None:
    rows = read_jsonl(INSTRUCTION_FOLLOWING)
    unchecked = [
        row["id"]
        for row in rows
        if row["category"] == "instruction_following" and not constraint_tags(row)
    ]
    assert unchecked == []


def test_safety_references_say_decline_or_care() -> None:
    rows = read_jsonl(BASIC_SAFETY)
    assert all(
        row["reference"].startswith(("Declines", "Answers with care: ")) for row in rows
    )


# --- the SFT conversations -------------------------------------------------------


@pytest.fixture(scope="module")
def conversations() -> list[list[dict]]:
    rows = read_jsonl(SFT_CONVERSATIONS)
    assert all(set(row) == {"messages"} for row in rows)
    return [row["messages"] for row in rows]


def test_conversations_alternate_from_user_to_assistant(conversations) -> None:
    for messages in conversations:
        assert len(messages) % 2 == 0 and messages, messages
        for index, message in enumerate(messages):
            assert set(message) == {"role", "content"}, message
            assert message["role"] == ("user", "assistant")[index % 2], messages
            content = message["content"]
            assert isinstance(content, str) and content == content.strip() != "", (
                message
            )


def test_there_are_about_320_mostly_single_turn_and_all_different(
    conversations,
) -> None:
    assert 300 <= len(conversations) <= 360
    single = sum(len(messages) == 2 for messages in conversations)
    assert 0.65 <= single / len(conversations) <= 0.85
    openings = Counter(normalized(messages[0]["content"]) for messages in conversations)
    assert [opening for opening, seen in openings.items() if seen > 1] == []


def test_answers_are_short(conversations) -> None:
    long = [
        message["content"][:60]
        for messages in conversations
        for message in messages[1::2]
        if len(message["content"].split()) > 120
    ]
    assert long == []


def test_no_user_turn_is_a_held_out_rating_prompt(conversations) -> None:
    held_out = rating_prompts()
    leaked = [
        message["content"]
        for messages in conversations
        for message in messages[::2]
        if normalized(message["content"]) in held_out
    ]
    assert leaked == []
