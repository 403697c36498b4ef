"""Compare inside chat: a second answer beside the first, blind and shuffled, and the
vote stored in the rating store as a chat rating. Over the real WebSocket, with real
generation and Celery workers."""

import pytest
from django.core.exceptions import ValidationError

from tests.conftest import make_user
from tests.webapp.test_chat_consumer import (
    receive_until_settled,
    session_cookie,
    socket,
)
from webapp.chat import services
from webapp.chat.models import Conversation, Message
from webapp.ratings.models import Rating

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
]


async def test_a_compared_answer_is_shown_blind_and_the_vote_is_a_chat_rating(
    generation_worker, live_celery_worker
):
    owner = await make_user_async("olga")
    conversation = await Conversation.objects.acreate(
        owner=owner, model_name="tiny-random", temperature=1.0, max_new_tokens=12
    )
    page = socket(conversation.pk, await session_cookie_async(owner))
    await page.connect()
    await page.receive_json_from()
    await page.send_json_to({"action": "send", "text": "Name a colour"})
    await receive_until_settled(page)
    first = await Message.objects.aget(role="model")

    await page.send_json_to(
        {"action": "compare", "message_id": first.pk, "model": "tiny-random"}
    )
    _received, shown = await receive_until_settled(page)
    second = await Message.objects.select_related("compared_with").aget(
        compared_with=first
    )
    assert second.status == "complete" and second.seed != first.seed
    html = shown["html"]
    assert '<section class="compare"' in html and html.count('data-vote="') == 7
    assert "tiny-random" not in html  # the models stay hidden until the vote
    left, right = second.compared_pair

    await page.send_json_to({"action": "vote", "message_id": second.pk, "choice": 2})
    _received, after = await receive_until_settled(page)
    await page.disconnect()

    rating = await Rating.objects.select_related(
        "item__answer_a", "item__answer_b", "item__campaign"
    ).aget()
    assert rating.source == "chat" and rating.item.campaign.source == "chat"
    assert (rating.item.answer_a.text, rating.item.answer_b.text) == (
        first.content,
        second.content,
    )
    # "Left better": +2 for A (the first answer) if it was on the left.
    assert rating.score == (2 if left.pk == first.pk else -2)
    await conversation.arefresh_from_db()
    assert conversation.current_leaf_id == left.pk  # the preferred answer goes on
    assert '<section class="compare"' not in after["html"]
    assert "tiny-random" in after["html"]


async def make_user_async(name: str):
    from asgiref.sync import sync_to_async

    return await sync_to_async(make_user)(name)


async def session_cookie_async(user):
    from asgiref.sync import sync_to_async

    return await sync_to_async(session_cookie)(user)


def test_voting_needs_a_comparison_and_both_answers_finished(db):
    conversation = services.create_conversation(make_user("olga"), model_name="m")
    question = Message.objects.create(
        conversation=conversation, role="user", content="q"
    )
    first = Message.objects.create(
        conversation=conversation, parent=question, role="model", content="a"
    )
    with pytest.raises(ValidationError, match="no comparison"):
        services.vote(first, 1)
    second = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="model",
        status="streaming",
        compared_with=first,
        compared_left=True,
    )
    with pytest.raises(ValidationError, match="both answers to finish"):
        services.vote(second, 1)
    second.status = Message.Status.COMPLETE
    with pytest.raises(ValidationError, match="Vote on this comparison first"):
        services.compare(second, "m")
    assert not Rating.objects.exists()
