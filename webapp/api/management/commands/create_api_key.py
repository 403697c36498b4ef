from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.api.models import ApiKey


class Command(BaseCommand):
    help = "Creates an API key for USERNAME and prints it (its last line is the key)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label for the key")

    def handle(self, *args, username: str, name: str, **options) -> None:
        try:
            user = get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        _key, raw_key = ApiKey.objects.create_key(user, name=name)
        self.stdout.write(
            f"API key for {username} (shown once; only its hash is stored):"
        )
        self.stdout.write(raw_key)
