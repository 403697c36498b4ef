"""`manage.py leaderboard [--campaign NAME] [--json]`: Bradley-Terry ratings."""

from django.core.management.base import BaseCommand, CommandError

from webapp.evals import reports
from webapp.evals.cli import add_output_options, campaign_named, write_json, write_table

KEYS = ("model", "rating", "ci_low", "ci_high", "rank", "n_battles")


class Command(BaseCommand):
    help = (
        "Every model's Bradley-Terry rating on the Elo scale with a 95% interval and "
        "its rank band, from all campaigns and chat votes or from one campaign."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", help="one campaign (default: all)")
        parser.add_argument("--anchor", help="a model fixed at 1000 (default: mean)")
        parser.add_argument("--min-battles", type=int, default=0)
        parser.add_argument(
            "--interval", choices=("bootstrap", "sandwich"), default="bootstrap"
        )
        add_output_options(parser)

    def handle(self, campaign, anchor, min_battles, interval, json, raters, **_):
        result = reports.leaderboard(
            reports.LeaderboardOptions(
                campaign_id=campaign_named(campaign).pk if campaign else None,
                group=raters,
                anchor=anchor,
                min_battles=min_battles,
                interval=interval,
            )
        )
        if result.board is None:
            raise CommandError(result.problem)
        rows = [{key: row.to_dict()[key] for key in KEYS} for row in result.board.rows]
        if json:
            write_json(self.stdout, rows)
            return
        write_table(
            self.stdout,
            ["rank", "model", "rating", "95% CI", "battles"],
            [
                (r["rank"], r["model"], f"{r['rating']:.1f}",
                 f"{r['ci_low']:.1f} to {r['ci_high']:.1f}", r["n_battles"])
                for r in rows
            ],
        )  # fmt: skip
