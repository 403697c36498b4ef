"""Speed of the dashboards' statistics (`webapp/evals/stats.py`), with LMArena's own
library beside ours on the same battles.

Needs LMArena's `arena-rank` (PyPI) in a virtual environment of its own, as its pins
(jax 0.8.1, numpy 2.3.3) are not ours; `.venv-*/` is ignored by git:

    python3.11 -m venv .venv-arena && .venv-arena/bin/pip install arena-rank

Run (5 to 15 minutes on two cores, nearly all of it arena-rank's; `--ours-only` skips
arena-rank and takes seconds):

    .venv/bin/python benchmarks/stats.py [--runs 3] [--battles 1000000] [--ours-only]

In one run:

- Table 5's win rate with a 2,000-resample bootstrap interval over prompts, from
  1,000,000 ratings over 10,000 prompts (`stats.win_rate`, per-rating columns in,
  aggregation included). Goal: at most 1 s.
- A Bradley-Terry leaderboard with 100 bootstrap resamples on 1,000,000 battles among
  100 models (a fifth of them ties), ours (`stats.bradley_terry`) and arena-rank's
  (`PairDataset.from_pandas` and `BradleyTerry.compute_ratings_and_cis` with
  `ci_method="bootstrap"`, in its own process, after one warm-up call on the same
  battles; its `lbfgs_minimize` jits a new closure on every call, so each of its 101
  fits compiles anyway). Its resamples run in a pool of as many processes as there
  are cores (started with "spawn": forked from a process where JAX's threads already
  ran, the pool hung); ours run in one thread. Both take the battles as rows of model
  names and outcomes. Goals: ours at least 10 times faster, ratings within 1 Elo
  point of arena-rank's. Conventions matched: scale 400, base 10, mean rating 1000
  (arena-rank starts its fit from zeros and its gradients sum to zero, so its ratings
  average its `init_rating`), no anchor, a tie as outcome 0.5. The bootstrap bounds
  differ by resampling noise (other random draws); the sandwich bounds by arena-rank's
  ridge of 1e-5 x battles on the Hessian's diagonal.

Times are medians of `--runs` runs (arena-rank: one timed run). The last line is
`win_rate_s=A bt_s=B arena_bt_s=C ratio=D max_rating_diff=E`.
Never run inside the test suite: speed lives here, not in timed asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ARENA_PYTHON = ROOT / ".venv-arena" / "bin" / "python"
N_MODELS = 100
N_PROMPTS = 10_000
N_RATINGS = 1_000_000
TIE_SHARE = 0.2
WINNER = np.array(["model_b", "tie", "model_a"])  # arena-rank's labels of 0, 0.5, 1


def median_seconds(function, runs: int) -> tuple[float, object]:
    """Median wall time of `runs` calls after a warm-up call, and the last result."""
    result = function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def make_ratings(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Prompt ids and 7-point scores; each prompt has its own leaning."""
    prompts = rng.integers(0, N_PROMPTS, N_RATINGS)
    leaning = rng.normal(0.3, 1.0, N_PROMPTS)
    scores = np.clip(np.rint(leaning[prompts] + rng.normal(0, 1.5, N_RATINGS)), -3, 3)
    return prompts, scores


def make_battles(rng: np.random.Generator, n_battles: int) -> dict[str, np.ndarray]:
    """Battles between random pairs of models with Elo-like strengths."""
    strength = rng.normal(0.0, 1.0, N_MODELS)  # logits: ratings spread ~170
    a = rng.integers(0, N_MODELS, n_battles)
    b = (a + rng.integers(1, N_MODELS, n_battles)) % N_MODELS
    p_win = 1 / (1 + np.exp(strength[b] - strength[a]))
    draw = rng.random(n_battles)
    outcome = np.where(
        draw < TIE_SHARE,
        0.5,
        np.where(draw < TIE_SHARE + (1 - TIE_SHARE) * p_win, 1, 0),
    )
    names = np.array([f"model-{i:03d}" for i in range(N_MODELS)])
    return {"model_a": names[a], "model_b": names[b], "outcome": outcome}


def arena_worker(battles_path: str) -> None:
    """In arena-rank's environment: fit, time, and print the results as JSON."""
    import multiprocessing

    import pandas as pd
    from arena_rank.models.bradley_terry import BradleyTerry
    from arena_rank.utils.data_utils import PairDataset

    # arena-rank fits its resamples in a multiprocessing pool; forked from a process
    # where JAX's threads already run, the workers hung (Linux forks by default).
    multiprocessing.set_start_method("spawn")
    data = np.load(battles_path)
    frame = pd.DataFrame(
        {
            "model_a": data["model_a"],
            "model_b": data["model_b"],
            "winner": WINNER[(data["outcome"] * 2).astype(int)],
        }
    )

    def leaderboard(ci_method: str) -> dict:
        dataset = PairDataset.from_pandas(frame)
        model = BradleyTerry(n_competitors=len(dataset.competitors))
        found = model.compute_ratings_and_cis(
            dataset, ci_method=ci_method, num_bootstrap=100, seed=0
        )
        return {
            "models": list(found["competitors"]),
            "ratings": np.asarray(found["ratings"]).tolist(),
            "low": np.asarray(found["rating_lower"]).tolist(),
            "high": np.asarray(found["rating_upper"]).tolist(),
        }

    start = time.perf_counter()
    leaderboard("bootstrap")
    cold = time.perf_counter() - start
    start = time.perf_counter()
    bootstrap = leaderboard("bootstrap")
    warm = time.perf_counter() - start
    sandwich = leaderboard("sandwich")
    print(
        json.dumps(
            {
                "cold_s": cold,
                "warm_s": warm,
                "bootstrap": bootstrap,
                "sandwich": sandwich,
            }
        )
    )


def run_arena(battles: dict[str, np.ndarray]) -> dict:
    if not ARENA_PYTHON.exists():
        sys.exit(f"{ARENA_PYTHON} is missing; see the first lines of {__file__}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "battles.npz"
        np.savez(path, **battles)
        done = subprocess.run(
            [str(ARENA_PYTHON), __file__, "--arena-worker", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--battles", type=int, default=1_000_000)
    parser.add_argument("--ours-only", action="store_true", help="skip arena-rank")
    parser.add_argument("--arena-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arena_worker:
        arena_worker(args.arena_worker)
        return

    sys.path.insert(0, str(ROOT))
    from webapp.evals import stats

    rng = np.random.default_rng(0)
    prompts, scores = make_ratings(rng)
    win_rate_s, table = median_seconds(
        lambda: stats.win_rate(prompts, scores), args.runs
    )
    print(
        f"win rate, {N_RATINGS:,} ratings over {N_PROMPTS:,} prompts, 2,000 resamples: "
        f"{win_rate_s:.3f} s ({table.win_rate:.4f} [{table.ci_low:.4f}, "
        f"{table.ci_high:.4f}])"
    )

    battles = make_battles(rng, args.battles)
    bt_s, board = median_seconds(
        lambda: stats.bradley_terry(
            battles["model_a"], battles["model_b"], battles["outcome"], n_bootstrap=100
        ),
        args.runs,
    )
    print(f"Bradley-Terry, {args.battles:,} battles, 100 resamples, ours: {bt_s:.3f} s")
    if args.ours_only:
        return
    arena = run_arena(battles)
    print(
        f"Bradley-Terry, arena-rank bootstrap mode: {arena['warm_s']:.1f} s "
        f"(first call, with JAX compilation: {arena['cold_s']:.1f} s)"
    )
    ours = {row.model: row for row in board.rows}

    def gap(field: str, theirs: dict, key: str) -> float:
        return max(
            abs(getattr(ours[model], field) - value)
            for model, value in zip(theirs["models"], theirs[key], strict=True)
        )

    rating_gap = gap("rating", arena["bootstrap"], "ratings")
    print(
        f"largest difference to arena-rank, Elo points: ratings {rating_gap:.2g}; "
        f"sandwich bounds {gap('sandwich_low', arena['sandwich'], 'low'):.2g} / "
        f"{gap('sandwich_high', arena['sandwich'], 'high'):.2g}; bootstrap bounds "
        f"{gap('bootstrap_low', arena['bootstrap'], 'low'):.2g} / "
        f"{gap('bootstrap_high', arena['bootstrap'], 'high'):.2g} (resampling noise)"
    )
    ratio = arena["warm_s"] / bt_s
    print(
        f"win_rate_s={win_rate_s:.3f} bt_s={bt_s:.3f} arena_bt_s={arena['warm_s']:.2f} "
        f"ratio={ratio:.1f} max_rating_diff={rating_gap:.2g}"
    )


if __name__ == "__main__":
    main()
