"""Compares our Gemma with the parity references of `make_references.py`.

Runs in the project's environment (no torch, no llama.cpp):

    .venv/bin/python -m tools.parity.compare

and prints, against HF transformers and against llama.cpp on the same GGUF: teacher-
forced top-1 agreement and mean |Δ log-prob| per passage and overall, token-id
equality of our tokenizer with llama.cpp, and whether our greedy continuations equal
HF's. `tests/model_service/test_parity.py` asserts the bars with the same functions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from model_service import registry, scoring
from model_service.registry import LoadedModel
from model_service.sampler import Sampler
from model_service.sampling import SamplingParams

DATA_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "parity"
REFERENCE_FILES = {
    "tokens": "llamacpp_tokens.json",
    "llamacpp": "llamacpp_logits.json",
    "hf": "hf_logits.json",
    "greedy": "hf_greedy.json",
}
# Greedy generation rounds its cache's length up to a multiple of this.
LENGTH_STEP = 64

# One teacher-forced result: the ids scored, then per position the argmax and the
# log-prob of the next id (see `make_references.teacher_forced`).
Scored = dict[str, list]
ScoreFn = Callable[[Sequence[int]], Scored]


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How close two teacher-forced results over the same ids are."""

    positions: int
    top1_agreement: float
    mean_abs_dlogprob: float
    max_abs_dlogprob: float

    def __str__(self) -> str:
        return (
            f"top-1 {self.top1_agreement:.2%}, mean |Δ log-prob| "
            f"{self.mean_abs_dlogprob:.2e} (max {self.max_abs_dlogprob:.2e}) "
            f"over {self.positions} positions"
        )


def load_references(data_dir: Path = DATA_DIR) -> dict[str, dict]:
    """The reference files by kind (see `REFERENCE_FILES`); one missing is an error."""
    missing = [
        name for name in REFERENCE_FILES.values() if not (data_dir / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} missing in {data_dir}: "
            "run tools/parity/make_references.py"
        )
    return {
        kind: json.loads((data_dir / name).read_text())
        for kind, name in REFERENCE_FILES.items()
    }


def agreement(reference: Iterable[Scored], ours: Iterable[Scored]) -> Agreement:
    """Top-1 agreement and |Δ log-prob| over all positions of paired results."""
    pairs = list(zip(reference, ours, strict=True))
    for ref, our in pairs:
        if list(ref["ids"]) != list(our["ids"]):
            raise ValueError("the results score different ids")
    ref_top1, our_top1 = (np.concatenate([p[i]["top1"] for p in pairs]) for i in (0, 1))
    delta = np.abs(
        np.concatenate(
            [np.subtract(ref["logprobs"], our["logprobs"]) for ref, our in pairs]
        )
    )
    return Agreement(
        positions=len(delta),
        top1_agreement=float(np.mean(ref_top1 == our_top1)),
        mean_abs_dlogprob=float(delta.mean()),
        max_abs_dlogprob=float(delta.max()),
    )


def score_passages(references: dict[str, dict], score: ScoreFn) -> dict[str, Scored]:
    """Our teacher-forced results on the reference ids of every passage."""
    return {
        name: score(ref["ids"]) for name, ref in references["hf"]["passages"].items()
    }


def passage_agreements(
    reference: dict[str, Scored], ours: dict[str, Scored]
) -> dict[str, Agreement]:
    """Per passage, then "all" for every position of every passage."""
    per_passage = {
        name: agreement([reference[name]], [ours[name]]) for name in reference
    }
    per_passage["all"] = agreement(reference.values(), (ours[n] for n in reference))
    return per_passage


def token_mismatches(
    references: dict[str, dict], encode: Callable[[str], list[int]]
) -> dict[str, tuple[list[int], list[int]]]:
    """Texts whose ids differ from llama.cpp's: name -> (llama.cpp's, ours)."""
    tokens = references["tokens"]
    return {
        name: (tokens["tokens"][name], ours)
        for name, text in tokens["texts"].items()
        if (ours := encode(text)) != tokens["tokens"][name]
    }


def greedy_mismatches(
    references: dict[str, dict], generate: Callable[[list[list[int]]], list[list[int]]]
) -> dict[str, tuple[list[int], list[int]]]:
    """Prompts whose greedy continuation differs from HF's: name -> (HF's, ours)."""
    prompts = references["greedy"]["prompts"]
    ours = generate([prompt["prompt_ids"] for prompt in prompts.values()])
    return {
        name: (prompt["generated"], continuation)
        for (name, prompt), continuation in zip(prompts.items(), ours, strict=True)
        if continuation != prompt["generated"]
    }


def model_scorer(model: LoadedModel) -> ScoreFn:
    """Our teacher-forced scoring (`model_service.scoring`) in the references' form."""

    def score_ids(ids: Sequence[int]) -> Scored:
        result = scoring.score(model, ids)
        # Our top1 has one more entry: the prediction past the last id.
        return {
            "ids": result.token_ids,
            "top1": result.top1[:-1],
            "logprobs": result.logprobs,
        }

    return score_ids


def model_greedy(
    model: LoadedModel, max_new_tokens: int
) -> Callable[[list[list[int]]], list[list[int]]]:
    """Greedy continuations by our sampler (KV cache, one batch, float32), as ids.

    The cache's length is rounded up to a multiple of `LENGTH_STEP`, so that calls on
    prompts of about the same length share their compiled programs (a compilation of
    the 270M model's takes seconds; a row's tokens do not depend on the length)."""

    def generate(prompts: list[list[int]]) -> list[list[int]]:
        needed = max(map(len, prompts)) + max_new_tokens
        sampler = Sampler(
            model.config,
            model.params,
            max_batch=len(prompts),
            max_length=min(
                -(-needed // LENGTH_STEP) * LENGTH_STEP, model.config.max_seq_len
            ),
            dtype=jnp.float32,
        )
        params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
        return [g.token_ids for g in sampler.generate(prompts, params, model.tokenizer)]

    return generate


def print_mismatches(
    title: str, total: int, mismatches: dict[str, tuple[list[int], list[int]]]
) -> None:
    print(f"\n{title}: {total - len(mismatches)} of {total} equal")
    for name, (theirs, ours) in mismatches.items():
        print(f"  {name}:\n    reference {theirs}\n    ours      {ours}")


def main() -> None:
    references = load_references()
    model = registry.load_model(registry.GEMMA3_270M)
    ours = score_passages(references, model_scorer(model))
    for peer in ("hf", "llamacpp"):
        print(f"\nteacher-forced, ours vs {peer}:")
        agreements = passage_agreements(references[peer]["passages"], ours)
        for name, result in agreements.items():
            print(f"  {name:24} {result}")
    print("\nHF vs llama.cpp, as recorded:", references["hf"]["vs_llamacpp"]["all"])

    texts = references["tokens"]["texts"]
    print_mismatches(
        "token ids vs llama.cpp",
        len(texts),
        token_mismatches(references, model.tokenizer.encode),
    )
    greedy = references["greedy"]
    print_mismatches(
        "greedy continuations vs HF",
        len(greedy["prompts"]),
        greedy_mismatches(references, model_greedy(model, greedy["max_new_tokens"])),
    )


if __name__ == "__main__":
    main()
