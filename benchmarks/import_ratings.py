"""Speed of `manage.py import_ratings` on a million lines, on SQLite and PostgreSQL.

Needs: the project installed (`make install`); for PostgreSQL, a server (the default
URL is the CI one: postgres://127.0.0.1:5432/test; it creates and drops a database of
its own there).

    .venv/bin/python benchmarks/import_ratings.py [--lines 1000000] [--postgres URL]

Writes a file of `--lines` ratings (10,000 prompts, 10 models in arena-style pairs,
500 raters, answers of ~400 characters), then imports it with the real command into a
fresh SQLite database and a fresh PostgreSQL database, each migrated first, and prints
lines/s for each (goal: >= 20,000). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def write_file(path: Path, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    models = [f"model-{i}" for i in range(10)]
    words = "the a model answer helps with code poems facts lists and more".split()
    answers = {}
    with path.open("w") as out:
        for _ in range(lines):
            prompt = rng.randrange(10_000)
            a, b = rng.sample(models, 2)
            for model in (a, b):
                if (prompt, model) not in answers:
                    answers[prompt, model] = " ".join(rng.choices(words, k=70))
            record = {
                "prompt_id": f"p{prompt}",
                "prompt": f"Question number {prompt}: explain something useful.",
                "category": ["coding", "creative_writing", "safety"][prompt % 3],
                "model_a": a,
                "model_b": b,
                "answer_a": answers[prompt, a],
                "answer_b": answers[prompt, b],
                "score": rng.randint(-3, 3),
                "left": rng.choice("ab"),
                "rater": f"rater-{rng.randrange(500)}",
                "seconds": round(rng.uniform(5, 120), 1),
            }
            out.write(json.dumps(record) + "\n")


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def time_import(database_url: str, path: Path) -> float:
    env = {**os.environ, "DATABASE_URL": database_url}
    manage(env, "migrate", "--noinput")
    started = time.perf_counter()
    manage(env, "import_ratings", str(path), "--campaign", "benchmark")
    return time.perf_counter() - started


def postgres_database(base_url: str, name: str, create: bool) -> str:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        if create:
            connection.execute(f"CREATE DATABASE {name}")
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgres://127.0.0.1:5432/test")
    args = parser.parse_args()
    results = {"lines": args.lines}
    with tempfile.TemporaryDirectory(prefix="import-bench-") as directory:
        path = Path(directory) / "ratings.jsonl"
        write_file(path, args.lines)
        seconds = time_import(f"sqlite:///{directory}/db.sqlite3", path)
        results["sqlite_lines_per_s"] = round(args.lines / seconds)
        database = postgres_database(args.postgres, "import_bench", create=True)
        try:
            seconds = time_import(database, path)
            results["postgres_lines_per_s"] = round(args.lines / seconds)
        finally:
            postgres_database(args.postgres, "import_bench", create=False)
    for vendor in ("sqlite", "postgres"):
        print(f"{vendor}: {results[f'{vendor}_lines_per_s']:,} lines/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
