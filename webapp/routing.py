"""WebSocket routes: each app's `websocket_urlpatterns`, joined."""

from webapp.chat.routing import websocket_urlpatterns as chat_websockets
from webapp.evals.routing import websocket_urlpatterns as evals_websockets
from webapp.runs.routing import websocket_urlpatterns as runs_websockets

websocket_urlpatterns = [*chat_websockets, *evals_websockets, *runs_websockets]
