"""Model output as Markdown, rendered to HTML that cannot run anything.

Two locks: markdown-it leaves raw HTML in the text as escaped text (`html` off) and
refuses `javascript:` links; nh3 then keeps only an allow-list of tags and attributes,
so even a renderer bug cannot let a `<script>` or an `onerror=` through.
"""

import functools

import nh3
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "code": {"class"}}


# A page gets its whole branch again after every action, during the answer's prefill;
# finished answers do not change, so each is rendered once (about 1.5 ms per 2,000
# characters) and then comes from here. Keyed by the text alone: the output is too.
@functools.lru_cache(maxsize=256)
def render_markdown(text: str) -> str:
    return nh3.clean(
        _markdown.render(text),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
    )
