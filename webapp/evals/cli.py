"""What the dashboards' management commands share: finding a campaign by name, and
printing JSON or a readable table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from django.core.management.base import CommandError, CommandParser

from webapp.evals import data
from webapp.ratings.models import Campaign


def campaign_named(name: str) -> Campaign:
    found = Campaign.objects.filter(name=name).first()
    if found is None:
        raise CommandError(f"no campaign named {name!r}")
    return found


def add_output_options(parser: CommandParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--raters",
        choices=list(data.GROUPS),
        default=data.HUMAN,
        help="whose ratings (default: human, with imported studies' raters)",
    )


def write_json(stdout: TextIO, value: Any) -> None:
    stdout.write(json.dumps(value, indent=2, ensure_ascii=False))


def write_table(
    stdout: TextIO, headers: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Columns padded to their widest cell."""
    cells = [list(map(str, headers)), *[list(map(str, row)) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        stdout.write(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
