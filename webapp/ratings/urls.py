from django.urls import path

from webapp.ratings import api, views

app_name = "ratings"

urlpatterns = [
    # Raters: the page and its JSON twin.
    path("rate/", views.rate, name="rate"),
    path("rate/<uuid:token>/", views.answer, name="answer"),
    path("api/rate/next", api.next_task, name="api-next"),
    path("api/rate/submit", api.submit, name="api-submit"),
    path("api/rate/skip", api.skip, name="api-skip"),
    path("api/whoami", api.whoami, name="api-whoami"),
    # Researchers.
    path("ratings/", views.campaign_list, name="campaigns"),
    path("ratings/new/", views.campaign_create, name="campaign-create"),
    path("ratings/<int:pk>/", views.campaign_detail, name="campaign"),
    path("ratings/<int:pk>/progress", views.campaign_progress, name="progress"),
    path("ratings/<int:pk>/guidelines/", views.campaign_guidelines, name="guidelines"),
    path("ratings/<int:pk>/status/", views.campaign_status, name="status"),
    path("ratings/<int:pk>/resume/", views.campaign_resume, name="resume"),
    path(
        "ratings/<int:pk>/answers/",
        views.campaign_import_answers,
        name="import-answers",
    ),
    path("ratings/<int:pk>/export/", views.campaign_export, name="export"),
    path("ratings/prompt-sets/", views.prompt_set_list, name="prompt-sets"),
    path("ratings/prompt-sets/<int:pk>/", views.prompt_set_detail, name="prompt-set"),
]
