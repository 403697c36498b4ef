from django.urls import path

from webapp.evals import views

app_name = "evals"

urlpatterns = [
    path("", views.index, name="index"),
    path("campaigns/<int:pk>/", views.campaign, name="campaign"),
    path(
        "campaigns/<int:pk>/numbers/", views.campaign_fragment, name="campaign-numbers"
    ),
    path("campaigns/<int:pk>/report.json", views.campaign_json, name="campaign-json"),
    path(
        "campaigns/<int:pk>/<slug:table>.csv", views.campaign_csv, name="campaign-csv"
    ),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path(
        "leaderboard/numbers/", views.leaderboard_fragment, name="leaderboard-numbers"
    ),
    path("leaderboard.json", views.leaderboard_json, name="leaderboard-json"),
    path("leaderboard/<slug:table>.csv", views.leaderboard_csv, name="leaderboard-csv"),
]
