from django.urls import path

from webapp.chat import views

app_name = "chat"

urlpatterns = [
    path("", views.conversation_list, name="list"),
    path("new/", views.conversation_create, name="create"),
    path("<int:pk>/", views.conversation_detail, name="detail"),
    path("<int:pk>/settings/", views.conversation_settings, name="settings"),
]
