"""`manage.py win_rates --campaign NAME [--json]`: Table 5 of a campaign."""

from django.core.management.base import BaseCommand

from webapp.evals import reports
from webapp.evals.cli import (
    add_output_options,
    campaign_named,
    percent,
    write_json,
    write_table,
)


class Command(BaseCommand):
    help = (
        "A campaign's win rates with 95% intervals and W/T/L, one row per model pair "
        'and category ("all": every category together).'
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        add_output_options(parser)

    def handle(self, campaign: str, json: bool, raters: str, **_) -> None:
        group = reports.campaign_report(campaign_named(campaign)).group(raters)
        cells = group.win_rates if group else ()
        if json:
            write_json(self.stdout, [cell.to_dict() for cell in cells])
            return
        write_table(
            self.stdout,
            ["model", "baseline", "category", "win %", "95% CI", "W %", "T %", "L %",
             "ratings", "prompts"],
            [
                (c.model, c.baseline, c.slice, percent(c.rate.win_rate),
                 f"{percent(c.rate.ci_low)}-{percent(c.rate.ci_high)}",
                 percent(c.rate.wins), percent(c.rate.ties), percent(c.rate.losses),
                 c.rate.n_ratings, c.rate.n_prompts)
                for c in cells
            ],
        )  # fmt: skip
