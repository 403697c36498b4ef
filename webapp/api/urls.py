from django.urls import path

from webapp.api import views

app_name = "api"

urlpatterns = [
    path("v1/models", views.list_models, name="models"),
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
]
