"""Small imported studies for the dashboards' tests: every rating written out, so
that the expected numbers can be worked out by hand."""

import io
import json

from webapp.ratings.chat_votes import record_vote
from webapp.ratings.models import Campaign
from webapp.ratings.rating_import import import_ratings

MODEL = "m-test"
BASELINE = "m-base"

# The worked case. Model m-test against m-base: on prompt p1 (coding) 3 wins, 1 tie
# and 1 loss, win rate (3 + 1/2) / 5 = 0.7, one prompt so the interval is [0.7,
# 0.7]; on p2 (writing) 2 losses, 0.0. Together (3 + 1/2) / 7 = 0.5, and a bootstrap
# over the two prompts draws both p2 (0.0) a quarter of the time and both p1 (0.7) a
# quarter of the time, so its 95% interval is [0.0, 0.7]. A second model, m-other,
# ties m-base once on p1.
WORKED = [
    ("p1", "coding", MODEL, BASELINE, 3, "r1", "a"),
    ("p1", "coding", MODEL, BASELINE, 1, "r2", "b"),
    ("p1", "coding", MODEL, BASELINE, 2, "r3", "a"),
    ("p1", "coding", MODEL, BASELINE, 0, "r4", "b"),
    ("p1", "coding", MODEL, BASELINE, -1, "r5", "a"),
    ("p2", "writing", MODEL, BASELINE, -2, "r1", "b"),
    ("p2", "writing", MODEL, BASELINE, -3, "r2", "a"),
    ("p1", "coding", "m-other", BASELINE, 0, "r1", "a"),
]


def line(prompt_id, category, model_a, model_b, score, rater, left, **extra) -> bytes:
    record = {
        "prompt_id": prompt_id,
        "prompt": f"Question {prompt_id}?",
        "category": category,
        "model_a": model_a,
        "model_b": model_b,
        "answer_a": f"{model_a} answers {prompt_id}.",
        "answer_b": f"{model_b} answers {prompt_id}, at more length.",
        "score": score,
        "left": left,
        "rater": rater,
        **extra,
    }
    return json.dumps(record).encode() + b"\n"


def import_study(name: str, rows=WORKED, **extra) -> Campaign:
    lines = b"".join(line(*row, **extra) for row in rows)
    campaign, _count = import_ratings(name, io.BytesIO(lines))
    return campaign


def battles(model_a, model_b, wins, ties, losses, prompt="p1", category="chat"):
    """Rows of a study where `model_a` beat `model_b` so many times, each by a
    rater of its own, shown left and right in turn."""
    scores = [2] * wins + [0] * ties + [-2] * losses
    return [
        (prompt, category, model_a, model_b, s, f"{prompt}-r{i}", "ab"[i % 2])
        for i, s in enumerate(scores)
    ]


def chat_votes(user, first: str, second: str, choices: list[int]) -> None:
    """Votes of the chat's Compare: `first` answered first (A), shown left."""
    for i, choice in enumerate(choices):
        record_vote(
            user,
            key=f"vote-{first}-{second}-{i}",
            history=[],
            question=f"Chat question {i}?",
            first=(first, f"{first} says {i}."),
            second=(second, f"{second} says {i}."),
            first_left=True,
            choice=choice,
        )
