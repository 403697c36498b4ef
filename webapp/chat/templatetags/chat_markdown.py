from django import template
from django.utils.safestring import mark_safe

from webapp.chat.markdown import render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> str:
    """Sanitized HTML of a saved answer (see webapp.chat.markdown)."""
    return mark_safe(render_markdown(text))
