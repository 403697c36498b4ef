"""A catalog model rates a campaign as a judge (`model_service.judge`).

It reads every item of the campaign (gold ones too: they measure it as they measure
people) in both orders, with its category's rubric, and stores its verdicts as
ratings of a rater of kind "judge", from answer A's side like everyone's; its
probabilities and confidence go in the rating's rationale. Judge ratings take no
place in the human queue, and dashboards keep them apart from people's.
"""

from __future__ import annotations

from webapp.ratings.models import Campaign, Item, Rater, Rating


def judge_rater(model_name: str) -> Rater:
    rater, _ = Rater.objects.get_or_create(
        name=f"judge:{model_name}", defaults={"kind": Rater.Kind.JUDGE}
    )
    return rater


def judge_campaign(campaign: Campaign, model_name: str, judge=None) -> int:
    """Rates the campaign's items this judge has not rated yet; returns how many.

    Args:
        campaign: the campaign.
        model_name: a catalog model's name, a registry name or a checkpoint path.
        judge: a `model_service.judge.Judge` already loaded (else it is loaded here).
    """
    if judge is None:
        from model_service.judge import Judge
        from model_service.registry import load_model
        from webapp.runs.services import model_path

        judge = Judge(load_model(model_path(model_name)))
    rater = judge_rater(model_name)
    items = (
        Item.objects.filter(campaign=campaign)
        .exclude(ratings__rater=rater)
        .select_related("prompt", "answer_a", "answer_b")
        .order_by("pk")
    )
    rated = 0
    for item in items.iterator(chunk_size=100):
        turns = [
            *item.prompt.history,
            {"role": "user", "content": item.prompt.text},
        ]
        verdict = judge.compare(
            turns, item.answer_a.text, item.answer_b.text, item.prompt.category
        )
        Rating.objects.create(
            item=item,
            rater=rater,
            score=verdict.score,
            left="a",
            rationale=(
                f"P(A better) {verdict.first:.3f}, P(B better) {verdict.second:.3f}, "
                f"P(tie) {verdict.tie:.3f}; confidence {verdict.confidence:.3f}"
            ),
            gold=bool(item.gold),
        )
        rated += 1
    return rated
