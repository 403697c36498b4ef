"""The leaderboard's options, from the page's query string."""

from __future__ import annotations

from django import forms

from webapp.evals import data
from webapp.evals.reports import LeaderboardOptions
from webapp.ratings.models import Campaign


class LeaderboardForm(forms.Form):
    campaign = forms.ModelChoiceField(
        Campaign.objects.all(),
        required=False,
        empty_label="All campaigns and chat votes",
    )
    raters = forms.ChoiceField(
        choices=[(g, g.capitalize()) for g in data.GROUPS],
        required=False,
        initial=data.HUMAN,
    )
    anchor = forms.CharField(
        required=False,
        max_length=300,
        help_text="A model fixed at 1000 (empty: the ratings average 1000).",
    )
    min_battles = forms.IntegerField(
        required=False, min_value=0, initial=0, label="Minimum battles"
    )
    interval = forms.ChoiceField(
        choices=[("bootstrap", "Bootstrap"), ("sandwich", "Sandwich")],
        required=False,
        initial="bootstrap",
        help_text="Which 95% interval sets the rank bands.",
    )

    def options(self) -> LeaderboardOptions:
        """The options chosen (the defaults for an unbound form)."""
        chosen = self.cleaned_data if self.is_bound else {}
        campaign = chosen.get("campaign")
        return LeaderboardOptions(
            campaign_id=campaign.pk if campaign else None,
            group=chosen.get("raters") or data.HUMAN,
            anchor=(chosen.get("anchor") or "").strip() or None,
            min_battles=chosen.get("min_battles") or 0,
            interval=chosen.get("interval") or "bootstrap",
        )
