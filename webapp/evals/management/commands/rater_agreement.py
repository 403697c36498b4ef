"""`manage.py rater_agreement --campaign NAME [--json]`: Krippendorff's alpha and
the rater table."""

from django.core.management.base import BaseCommand

from webapp.evals import reports
from webapp.evals.cli import campaign_named, percent, write_json, write_table


class Command(BaseCommand):
    help = (
        "A campaign's Krippendorff's alpha (ordinal), overall and per category, and "
        "each human rater's quality numbers with the reasons they are flagged."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, campaign: str, json: bool, **_) -> None:
        found = campaign_named(campaign)
        numbers = reports.campaign_numbers(found)
        human = numbers.report.human
        agreement = human.agreement_rows() if human else []
        overall = agreement[0] if agreement else {"alpha": None, "n_items": 0}
        raters = [q.to_dict() for q in numbers.raters.quality]
        if json:
            write_json(
                self.stdout,
                {
                    "campaign": found.name,
                    "alpha": overall["alpha"],
                    "n_items": overall["n_items"],
                    "n_ratings": overall.get("n_ratings", 0),
                    "categories": agreement[1:],
                    "raters": raters,
                },
            )
            return
        write_table(
            self.stdout,
            ["category", "alpha", "items", "ratings"],
            [
                (a["category"], "-" if a["alpha"] is None else f"{a['alpha']:.3f}",
                 a["n_items"], a["n_ratings"])
                for a in agreement
            ],
        )  # fmt: skip
        self.stdout.write("")
        write_table(
            self.stdout,
            ["rater", "ratings", "majority %", "gold %", "swap %", "left %", "ties %",
             "flags"],
            [
                (q["rater"], q["n_ratings"], percent(q["majority_agreement"]),
                 percent(q["gold_accuracy"]), percent(q["swap_consistency"]),
                 percent(q["left_win_rate"]), percent(q["tie_rate"]),
                 "; ".join(q["flags"]) or "-")
                for q in raters
            ],
        )  # fmt: skip
