from django import template

from webapp.accounts.roles import RATER, RESEARCHER, roles_of

register = template.Library()


@register.inclusion_tag("ratings/_nav.html", takes_context=True)
def ratings_nav(context) -> dict:
    """The header's links to the ratings pages that the user may open."""
    roles = roles_of(context["user"])
    return {"is_rater": RATER in roles, "is_researcher": RESEARCHER in roles}
