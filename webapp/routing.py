"""WebSocket routes; apps append theirs: `path("ws/chat/", ChatConsumer.as_asgi())`."""

websocket_urlpatterns: list = []
