"""Simulated raters: rules of a known taste that rate through the same queue as people.

For demos and tests of the whole loop: a simulated rater takes tasks with
`queue.next_task`, judges the two answers as shown (left and right) by its rule, and
submits with `queue.submit`, leases, caps, gold and repeats included. Its ratings are
stored under a rater of kind "simulated", which dashboards keep apart from people.

Tastes:
- `ends-turn`: prefers an answer that ends its turn within the token budget (it
  stopped, rather than being cut at `max_new_tokens`) and does not repeat itself,
  and likes an empty answer least;
- `mentions:WORD`: prefers an answer that mentions WORD (case-insensitive).
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable

from webapp.ratings import queue
from webapp.ratings.models import Answer, Assignment, Rater

Taste = Callable[[Answer], float]


def repetition(text: str) -> float:
    """The share of word trigrams that occur more than once (0: no repetition)."""
    words = text.lower().split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not trigrams:
        return 0.0
    return 1 - len(set(trigrams)) / len(trigrams)


def ends_turn(answer: Answer) -> float:
    """1 for an answer that ended its turn, 0 for one cut at the budget, -1 for one
    that says nothing (a person rates silence below a cut answer; liking the two the
    same lets a policy win ties by ending at once), less its repetition."""
    if not answer.text.strip():
        return -1.0
    ended = answer.finish_reason == "stop"
    return float(ended) - 2 * repetition(answer.text)


def mentions(word: str) -> Taste:
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    return lambda answer: float(bool(pattern.search(answer.text)))


def parse_taste(spec: str) -> Taste:
    if spec == "ends-turn":
        return ends_turn
    if spec.startswith("mentions:") and spec.removeprefix("mentions:").strip():
        return mentions(spec.removeprefix("mentions:").strip())
    raise ValueError(f"unknown taste {spec!r}: ends-turn or mentions:WORD")


def choice_for(left: float, right: float, margin: float = 0.5) -> int:
    """The 7-point choice (1 = left much better) for the two answers' liking."""
    difference = left - right
    if abs(difference) < 1e-9:
        return 4
    strength = 3 if abs(difference) >= 1 else 2 if abs(difference) >= margin else 1
    return 4 - strength if difference > 0 else 4 + strength


@dataclasses.dataclass
class SimulatedRater:
    """One simulated rater of a taste; `rate` takes and answers tasks until none are
    left (or `limit`)."""

    name: str
    taste_spec: str
    seed: int = 0

    def __post_init__(self) -> None:
        self.taste = parse_taste(self.taste_spec)
        self.rng = random.Random(self.seed)
        self.rater, _ = Rater.objects.get_or_create(
            name=f"simulated:{self.name}", defaults={"kind": Rater.Kind.SIMULATED}
        )

    def rate(self, campaign=None, limit: int | None = None) -> int:
        """Rates tasks (of `campaign` only, if given) until none is left or
        `limit`; returns how many."""
        done = 0
        while limit is None or done < limit:
            task = queue.next_task(self.rater, self.rng, campaign)
            if task is None:
                break
            queue.submit(self.rater, task.token, self.verdict(task))
            done += 1
        return done

    def verdict(self, task: Assignment) -> queue.Verdict:
        item = task.item
        shown = (
            (item.answer_a, item.answer_b)
            if task.left == "a"
            else (item.answer_b, item.answer_a)
        )
        left, right = (self.taste(answer) for answer in shown)
        return queue.Verdict(choice=choice_for(left, right), active_seconds=1.0)
