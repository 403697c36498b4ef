from django.urls import path

from webapp.evals.consumers import NumbersConsumer

websocket_urlpatterns = [
    path("ws/evals/campaigns/<int:campaign_id>/", NumbersConsumer.as_asgi()),
    path("ws/evals/leaderboard/", NumbersConsumer.as_asgi()),
]
