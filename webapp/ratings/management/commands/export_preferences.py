"""`manage.py export_preferences --campaign NAME --out FILE`: TRL preference pairs."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from webapp.ratings.export import TIES, write_preferences
from webapp.ratings.models import Campaign


class Command(BaseCommand):
    help = "Writes a campaign's ratings as preference pairs (JSON lines, TRL's format)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--ties", choices=TIES, default="drop")
        parser.add_argument(
            "--majority", action="store_true", help="one line per item, not per rating"
        )

    def handle(self, campaign: str, out: Path, ties: str, majority: bool, **_) -> None:
        found = Campaign.objects.filter(name=campaign).first()
        if found is None:
            raise CommandError(f"no campaign named {campaign!r}")
        with out.open("w", encoding="utf-8") as stream:
            count = write_preferences(found, stream, ties=ties, majority=majority)
        self.stdout.write(f"wrote {count} preference pairs to {out}")
