"""`manage.py simulate_raters --campaign NAME --taste ends-turn [--raters 3]`."""

from django.core.management.base import BaseCommand, CommandError

from webapp.ratings.models import Campaign
from webapp.ratings.simulated import SimulatedRater, parse_taste


class Command(BaseCommand):
    help = "Rates a campaign's tasks with simulated raters of a known taste."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--taste", default="ends-turn")
        parser.add_argument("--raters", type=int, default=3)
        parser.add_argument("--limit", type=int, default=None, help="tasks per rater")

    def handle(self, campaign: str, taste: str, raters: int, limit, **_) -> None:
        found = Campaign.objects.filter(name=campaign).first()
        if found is None:
            raise CommandError(f"no campaign named {campaign!r}")
        try:
            parse_taste(taste)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        total = 0
        for index in range(raters):
            rater = SimulatedRater(f"{taste}-{index}", taste, seed=index)
            total += rater.rate(found, limit)
        self.stdout.write(f"{raters} simulated raters gave {total} ratings")
