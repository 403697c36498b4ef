"""`manage.py publish_catalog`: the registered models into Redis, for the workers."""

from django.core.management.base import BaseCommand

from webapp.runs.services import publish_catalog


class Command(BaseCommand):
    help = "Mirrors the model catalog into Redis, where generation workers find it."

    def handle(self, **options) -> None:
        self.stdout.write(f"published {publish_catalog()} catalog model(s)")
