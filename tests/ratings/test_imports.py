"""Prompt files and past studies come in whole or not at all, with every bad line
named; the built-in prompt sets are there from the first migration."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from webapp.ratings import services
from webapp.ratings.models import Answer, Campaign, Item, Prompt, PromptSet, Rating
from webapp.ratings.prompt_files import BadFile
from webapp.ratings.rating_import import import_ratings

pytestmark = pytest.mark.django_db


def jsonl(*records) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )


def test_the_built_in_sets_mirror_the_reports_two_evaluations():
    instruction = PromptSet.objects.get(name="instruction-following")
    safety = PromptSet.objects.get(name="basic-safety")
    assert instruction.prompts.count() >= 200 and safety.prompts.count() >= 100
    assert set(instruction.prompts.values_list("category", flat=True)) == {
        "creative_writing",
        "coding",
        "instruction_following",
    }
    assert instruction.builtin and safety.builtin


def test_a_good_jsonl_file_makes_a_set():
    data = jsonl(
        {"id": "q1", "prompt": "Write a haiku.", "category": "creative", "tags": ["x"]},
        {"prompt": "Sort a list in Python.", "reference": "Uses sorted()."},
    )
    prompt_set, count = services.import_prompts("mine", io.BytesIO(data), "p.jsonl")

    assert count == 2
    first, second = prompt_set.prompts.order_by("id")
    assert (first.external_id, first.category, first.tags) == ("q1", "creative", ["x"])
    assert (second.external_id, second.category) == ("2", "general")  # line number
    assert second.reference == "Uses sorted()."


def test_a_file_with_bad_lines_saves_nothing_and_names_every_one():
    data = jsonl(
        {"id": "a", "prompt": "fine"},
        {"id": "b", "prompt": "   "},
        {"id": "a", "prompt": "again"},
        {"id": "c", "prompt": "x" * 20_001},
        {"id": "d", "prompt": "ok", "category": "Not A Category!"},
        b"\xff\xfe not utf-8",
        b"{not json",
        {"id": "e", "promt": "typo"},
        b'{"id": "f", "prompt": "\\ud800"}',
        {"id": "g", "prompt": "a\x00b"},
        {"id": "h", "prompt": "ok", "tags": ["\x00"]},
    )
    with pytest.raises(BadFile) as bad:
        services.import_prompts("mine", io.BytesIO(data), "p.jsonl")

    found = {(e.line, e.field) for e in bad.value.errors}
    assert {(2, "prompt"), (3, "id"), (4, "prompt"), (5, "category"), (6, "")} <= found
    assert {(7, ""), (8, "promt"), (8, "prompt"), (9, ""), (10, ""), (11, "")} <= found
    messages = " ".join(str(e) for e in bad.value.errors)
    for words in ("empty prompt", "duplicate id", "over-long", "bad category"):
        assert words in messages
    assert "not UTF-8" in messages and "not JSON" in messages
    assert not PromptSet.objects.filter(name="mine").exists()
    assert not Prompt.objects.filter(external_id__in=["a", "b"]).exists()


def test_a_csv_file_imports_with_comma_separated_tags():
    data = (
        b"id,prompt,category,tags\n"
        b'c1,"Say hi, nicely",greeting,"short, polite"\n'
        b"c2,Count to three,math,\n"
    )
    prompt_set, count = services.import_prompts("csv", io.BytesIO(data), "p.csv")
    assert count == 2
    assert prompt_set.prompts.get(external_id="c1").tags == ["short", "polite"]


def test_a_csv_row_that_is_not_utf8_is_named():
    data = b"id,prompt\nc1,fine\nc2,caf\xe9\n"
    with pytest.raises(BadFile) as bad:
        services.import_prompts("csv", io.BytesIO(data), "p.csv")
    assert [(e.line, e.message) for e in bad.value.errors] == [(3, "not UTF-8")]


def test_ids_already_in_the_set_clash(tmp_path: Path):
    services.import_prompts(
        "mine", io.BytesIO(jsonl({"id": 1, "prompt": "a"})), "a.jsonl"
    )
    with pytest.raises(BadFile, match="duplicate id"):
        services.import_prompts(
            "mine", io.BytesIO(jsonl({"id": 1, "prompt": "b"})), "b.jsonl"
        )


def test_the_command_reports_bad_lines_and_fails(tmp_path: Path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl({"prompt": ""}))
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_prompts", str(path), "--set", "x")
    assert "line 1, prompt: empty prompt" in capsys.readouterr().err

    path.write_bytes(jsonl({"prompt": "fine"}))
    call_command("import_prompts", str(path), "--set", "x")
    assert PromptSet.objects.get(name="x").prompts.count() == 1


# --- past studies ---------------------------------------------------------------------


def rating_line(**overrides) -> dict:
    line = {
        "prompt_id": "p1",
        "prompt": "Name a colour.",
        "category": "chat",
        "model_a": "alpha",
        "model_b": "beta",
        "answer_a": "Blue.",
        "answer_b": "I like trains.",
        "score": 2,
        "left": "b",
        "rater": "r1",
    }
    return {**line, **overrides}


def test_a_study_becomes_a_campaign_with_its_pairs_and_ratings():
    data = jsonl(
        rating_line(seconds=12.5, rationale=" colour ", unsafe_b=True),
        rating_line(rater="r2", score=-1, left="a"),
        rating_line(model_a="gamma", answer_a="Red.", rater="r1", score=0),
        rating_line(prompt_id="p2", prompt="Say hi.", answer_a="Hi!", answer_b="Yo"),
    )
    campaign, count = import_ratings("study", io.BytesIO(data))

    assert count == 4
    assert (campaign.source, campaign.status) == ("imported", "closed")
    assert campaign.prompt_set.prompts.count() == 2
    assert Answer.objects.filter(campaign=campaign).count() == 5
    items = Item.objects.filter(campaign=campaign)
    assert items.count() == 3  # alpha/beta twice on p1 is one item
    first = items.get(answer_a__model="alpha", prompt__external_id="p1")
    assert (first.needed, first.taken, first.rated) == (2, 2, 2)
    rating = Rating.objects.get(rater__name="r1", item=first)
    assert (rating.score, rating.left, rating.active_seconds) == (2, "b", 12.5)
    assert (rating.rationale, rating.unsafe_b, rating.source) == (
        "colour",
        True,
        "imported",
    )


def test_a_study_with_bad_lines_saves_nothing_and_names_every_one():
    data = jsonl(
        rating_line(),
        rating_line(score=4),
        rating_line(left="c", rater=""),
        rating_line(model_b="alpha"),
        rating_line(category="Bad Cat"),
        rating_line(prompt="Another text for p1."),
        {**rating_line(), "extra": 1},
        b'{"prompt_id": "\\ud800"}',
        b"nonsense",
        rating_line(model_a="m" * 151),  # would not fit the answers' model column
        rating_line(answer_b="a\x00b", rationale="\x00"),  # PostgreSQL refuses NUL
    )
    with pytest.raises(BadFile) as bad:
        import_ratings("study", io.BytesIO(data))

    found = {(e.line, e.field) for e in bad.value.errors}
    assert {(2, "score"), (3, "left"), (3, "rater"), (4, "model_b")} <= found
    assert {(5, "category"), (6, "prompt_id"), (7, "extra"), (8, ""), (9, "")} <= found
    assert (10, "model_a") in found
    assert {(11, "answer_b"), (11, "rationale")} <= found
    assert not Campaign.objects.filter(name="study").exists()
    assert not Rating.objects.exists()


def test_a_second_import_adds_to_the_same_campaign():
    import_ratings("study", io.BytesIO(jsonl(rating_line())))
    campaign, _ = import_ratings("study", io.BytesIO(jsonl(rating_line(rater="r9"))))
    item = Item.objects.get(campaign=campaign)
    assert (item.needed, item.rated) == (2, 2)
    assert Rating.objects.filter(item=item).count() == 2


def test_the_import_command(tmp_path: Path, capsys):
    path = tmp_path / "study.jsonl"
    path.write_bytes(jsonl(rating_line(), rating_line(rater="r2")))
    call_command("import_ratings", str(path), "--campaign", "study")
    assert "imported 2 ratings into 'study'" in capsys.readouterr().out
