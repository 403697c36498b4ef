"""`manage.py import_prompts FILE --set NAME`: a JSONL or CSV prompt file into a set."""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from webapp.ratings.prompt_files import BadFile
from webapp.ratings.services import import_prompts


class Command(BaseCommand):
    help = "Imports prompts (JSON lines or CSV) into a prompt set, all or none."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--set", required=True, dest="set_name")

    def handle(self, file: Path, set_name: str, **options) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            with file.open("rb") as stream:
                prompt_set, count = import_prompts(set_name, stream, file.name)
        except BadFile as bad:
            for error in bad.errors:
                self.stderr.write(str(error))
            raise CommandError(
                f"{file}: {bad.total} bad line(s); nothing was imported"
            ) from None
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"imported {count} prompts into {prompt_set.name!r}")
