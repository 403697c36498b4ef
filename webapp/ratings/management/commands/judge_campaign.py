"""`manage.py judge_campaign --campaign NAME --judge MODEL`: an automatic rater."""

from django.core.management.base import BaseCommand, CommandError

from webapp.ratings.judging import judge_campaign
from webapp.ratings.models import Campaign


class Command(BaseCommand):
    help = "A model rates a campaign's items as a judge (both orders, by rubric)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--judge", required=True, help="catalog name or model")

    def handle(self, campaign: str, judge: str, **options) -> None:
        found = Campaign.objects.filter(name=campaign).first()
        if found is None:
            raise CommandError(f"no campaign named {campaign!r}")
        count = judge_campaign(found, judge)
        self.stdout.write(f"{judge} judged {count} items of {campaign!r}")
