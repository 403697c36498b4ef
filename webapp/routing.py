"""WebSocket routes: each app's `websocket_urlpatterns`, joined."""

from webapp.chat.routing import websocket_urlpatterns as chat_websockets

websocket_urlpatterns = [*chat_websockets]
