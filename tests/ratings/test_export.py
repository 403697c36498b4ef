"""Preference export: TRL's conversational prompt / chosen / rejected with margin and
provenance, loaded by `datasets` as a trainer would."""

import json
from pathlib import Path

import datasets
import pytest
from django.core.management import call_command

from tests.conftest import make_user
from tests.ratings.factories import BASELINE, MODEL, make_campaign
from webapp.accounts.roles import RATER
from webapp.ratings import queue
from webapp.ratings.export import rater_hash

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated():
    """Three items, rated by two raters: A much better, a tie, B slightly better."""
    campaign = make_campaign(prompts=3, ratings_per_item=2)
    for name in ("alice", "bob"):
        rater = queue.rater_for(make_user(name, RATER))
        for wanted in (3, 0, -1):  # scores from A's side, in item order
            task = queue.next_task(rater)
            choice = queue.choice_for(wanted, task.left)
            queue.submit(
                rater, task.token, queue.Verdict(choice=choice, active_seconds=9)
            )
    return campaign


def export(tmp_path: Path, *options: str) -> list[dict]:
    out = tmp_path / "prefs.jsonl"
    call_command(
        "export_preferences", "--campaign", "campaign", "--out", str(out), *options
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_each_non_tie_rating_is_a_pair_with_its_provenance(rated, tmp_path):
    lines = export(tmp_path)

    assert len(lines) == 4  # two raters x (A much better, B slightly better)
    much = [x for x in lines if x["margin"] == 1.0]
    slight = [x for x in lines if x["margin"] == pytest.approx(1 / 3, abs=1e-3)]
    assert len(much) == len(slight) == 2
    assert all(x["model_chosen"] == MODEL for x in much)
    assert all(x["model_chosen"] == BASELINE for x in slight)
    line = much[0]
    assert line["prompt"][-1]["role"] == "user"
    assert line["chosen"] == [
        {"role": "assistant", "content": f"Answer of {MODEL} to {line['prompt_id']}."}
    ]
    assert line["rejected"][0]["content"].startswith(f"Answer of {BASELINE}")
    assert (line["model_a"], line["model_b"], line["campaign"]) == (
        MODEL,
        BASELINE,
        "campaign",
    )
    assert line["shown_left"] in "ab" and line["seconds"] == 9
    assert line["rater"] in {rater_hash("user:alice"), rater_hash("user:bob")}
    assert "alice" not in json.dumps(lines)
    assert line["gold"] is False and line["repeat"] is False


def test_an_answer_cut_at_its_token_budget_is_marked_truncated(rated, tmp_path):
    rated.answers.filter(model=BASELINE).update(finish_reason="length")
    rated.answers.filter(model=MODEL).update(finish_reason="stop")

    lines = export(tmp_path)

    for line in lines:
        cut = {"chosen": line["model_chosen"] == BASELINE}
        cut["rejected"] = not cut["chosen"]
        assert line["chosen_truncated"] is cut["chosen"], line
        assert line["rejected_truncated"] is cut["rejected"], line


def test_ties_can_be_kept_with_a_half_label(rated, tmp_path):
    lines = export(tmp_path, "--ties", "label")
    ties = [x for x in lines if "label" in x]
    assert len(lines) == 6 and len(ties) == 2
    assert all(x["label"] == 0.5 and x["margin"] == 0 for x in ties)


def test_majority_gives_one_line_per_item(rated, tmp_path):
    lines = export(tmp_path, "--majority")
    assert sorted(x["ratings"] for x in lines) == [2, 2]
    assert sorted(x["margin"] for x in lines) == [pytest.approx(1 / 3, abs=1e-3), 1.0]


def test_the_file_loads_with_datasets(rated, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    export(tmp_path)
    loaded = datasets.load_dataset(
        "json",
        data_files=str(tmp_path / "prefs.jsonl"),
        cache_dir=str(tmp_path / "cache"),
    )["train"]
    assert loaded.num_rows == 4
    assert {"prompt", "chosen", "rejected", "margin"} <= set(loaded.column_names)
    assert loaded[0]["chosen"][0]["role"] == "assistant"
