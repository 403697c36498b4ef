"""Reading a page's tables and chart rows back, as a person sees them."""

from html.parser import HTMLParser


class _Tables(HTMLParser):
    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.depth, self.rows, self.titles = table_id, 0, [], []
        self.cell: list[str] | None = None
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and (self.depth or attrs.get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag == "td":
            self.cell = []
        elif tag == "title":
            self.in_title = True
            self.titles.append("")

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "title":
            self.in_title = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self.in_title:
            self.titles[-1] += data


def table(html: str, table_id: str) -> list[list[str]]:
    """The body rows of the table with that id, each cell's text."""
    parser = _Tables(table_id)
    parser.feed(html)
    return [row for row in parser.rows if row]


def titles(html: str) -> list[str]:
    """The text of every <title> in the page's SVG charts (their tooltips)."""
    parser = _Tables("")
    parser.feed(html)
    return parser.titles[1:]  # the first is the page's own
