"""Creates the demo researcher and rater when missing; prints how to log in."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from webapp.accounts.roles import RATER, RESEARCHER

# (username, password, group, is_staff): the researcher may also use the Django admin.
DEMO_USERS = (
    ("researcher", "researcher-demo", RESEARCHER, True),
    ("rater", "rater-demo", RATER, False),
)


class Command(BaseCommand):
    help = "Create the demo researcher and rater if missing; print their credentials."

    def handle(self, *args, **options) -> None:
        for username, password, group, is_staff in DEMO_USERS:
            created = ensure_user(username, password, group, is_staff=is_staff)
            note = "created" if created else "exists, password unchanged"
            self.stdout.write(
                f"demo {group}: username {username!r} password {password!r} ({note})"
            )


def ensure_user(username: str, password: str, group: str, *, is_staff: bool) -> bool:
    """Creates the user in `group` unless that username exists; True if created."""
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=username,
        defaults={"is_staff": is_staff, "is_superuser": is_staff},
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
        user.groups.add(Group.objects.get(name=group))
    return created
