"""`manage.py import_ratings FILE --campaign NAME`: a study's ratings, all or none."""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from webapp.ratings.prompt_files import BadFile
from webapp.ratings.rating_import import import_ratings


class Command(BaseCommand):
    help = (
        "Imports ratings (JSON lines: prompt_id, prompt, category, model_a, model_b, "
        "answer_a, answer_b, score, left, rater, ...) into a campaign, made if missing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--campaign", required=True)

    def handle(self, file: Path, campaign: str, **options) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        started = time.perf_counter()
        try:
            with file.open("rb") as stream:
                found, count = import_ratings(campaign, stream)
        except BadFile as bad:
            for error in bad.errors:
                self.stderr.write(str(error))
            raise CommandError(
                f"{file}: {bad.total} error(s); nothing was imported"
            ) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        seconds = time.perf_counter() - started
        self.stdout.write(
            f"imported {count} ratings into {found.name!r} in {seconds:.1f} s "
            f"({count / seconds:,.0f} lines/s)"
        )
