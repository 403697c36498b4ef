"""The two groups people belong to, and who counts as a researcher."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

RATER = "rater"
RESEARCHER = "researcher"
GROUPS = (RATER, RESEARCHER)


def is_researcher(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Researchers are members of the `researcher` group, or staff."""
    if not user.is_authenticated:
        return False
    return user.is_staff or user.groups.filter(name=RESEARCHER).exists()


def is_rater(user: AbstractBaseUser | AnonymousUser) -> bool:
    return user.is_authenticated and user.groups.filter(name=RATER).exists()
