"""The two groups people belong to, and who counts as a researcher."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

RATER = "rater"
RESEARCHER = "researcher"
GROUPS = (RATER, RESEARCHER)


def roles_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    """The user's roles, in one query: members of a group have its role, and staff
    are researchers too."""
    if not user.is_authenticated:
        return frozenset()
    names = set(user.groups.filter(name__in=GROUPS).values_list("name", flat=True))
    if user.is_staff:
        names.add(RESEARCHER)
    return frozenset(names)


def is_researcher(user: AbstractBaseUser | AnonymousUser) -> bool:
    return RESEARCHER in roles_of(user)


def is_rater(user: AbstractBaseUser | AnonymousUser) -> bool:
    return RATER in roles_of(user)
