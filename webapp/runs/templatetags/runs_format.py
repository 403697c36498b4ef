"""Numbers and durations as the training pages show them (`static/runs/run.js`
writes live ones the same way)."""

from django import template

register = template.Library()


@register.filter
def significant(value: float) -> str:
    """Four significant digits: a loss, an accuracy and a learning rate alike."""
    return f"{value:.4g}"


@register.filter
def duration(seconds: float) -> str:
    """`45 s`, `3 min 20 s`, `2 h 05 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
