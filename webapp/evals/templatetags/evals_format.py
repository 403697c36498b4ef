"""Numbers as the dashboards print them; a number that is not there prints "—"."""

from django import template

register = template.Library()

MISSING = "—"


@register.filter
def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, without the sign: 0.7 -> 70.0."""
    return MISSING if value is None else f"{100 * value:.1f}"


@register.filter
def decimal(value: float | None, places: int = 1) -> str:
    return MISSING if value is None else f"{value:.{places}f}"


@register.filter
def pvalue(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2g}"
