"""Preference pairs from a simulated rater of known taste: it prefers the answer that
names a colour."""

import json
import random
from pathlib import Path

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
NOUNS = ["house", "car", "bird", "garden", "river", "shirt", "door", "boat", "kite",
         "lamp", "chair", "flower", "hat", "ball", "cup", "train"]  # fmt: skip
WORDS = ["small", "old", "quiet", "new", "big", "fine", "simple", "tall", "round",
         "warm", "cheap", "soft", "long", "bright", "clean", "heavy"]  # fmt: skip


def rater_prefers(first: str, second: str) -> bool:
    """The rater's taste: an answer naming a colour beats one that does not."""

    def names_a_colour(text: str) -> bool:
        return any(colour in text.split() for colour in COLOURS)

    return names_a_colour(first) and not names_a_colour(second)


def answer(rng: random.Random, noun: str, colour: str | None) -> str:
    words = rng.sample(WORDS, 2) + ([colour] if colour else [rng.choice(WORDS)])
    rng.shuffle(words)
    return f"It is a {' '.join(words)} {noun}."


def colour_pairs(count: int, seed: int = 0) -> list[dict]:
    """`count` pairs in TRL's standard form, chosen by the simulated rater."""
    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        noun = NOUNS[i % len(NOUNS)]
        prompt = f"Describe the {noun} number {i // len(NOUNS)}."
        a = answer(rng, noun, rng.choice(COLOURS))
        b = answer(rng, noun, None)
        if rng.random() < 0.5:
            a, b = b, a
        chosen, rejected = (a, b) if rater_prefers(a, b) else (b, a)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
