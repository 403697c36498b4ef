from django.urls import path

from webapp.runs import loop_views, views

app_name = "runs"

urlpatterns = [
    path("runs/", views.run_list, name="runs"),
    path("runs/new/", views.run_create, name="run-create"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/cancel/", views.run_change, {"change": "cancel"}, "cancel"),
    path("runs/<int:pk>/resume/", views.run_change, {"change": "resume"}, "resume"),
    path("runs/<int:pk>/delete/", views.run_change, {"change": "delete"}, "delete"),
    path("runs/<int:pk>/register/", views.run_register, name="register"),
    path("models/", views.model_list, name="models"),
    path("models/<str:name>/", views.model_detail, name="model"),
    path("api/models/<str:name>/score", views.score_api, name="api-score"),
    # The loop of a campaign: reward model -> RLHF -> evaluation, and the judge.
    path("runs/loop/<int:pk>/", loop_views.campaign_loop, name="campaign-loop"),
    path(
        "runs/loop/<int:pk>/reward-model/",
        loop_views.train_reward_model,
        name="loop-reward-model",
    ),
    path("runs/loop/<int:pk>/rlhf/", loop_views.run_rlhf, name="loop-rlhf"),
    path("runs/loop/<int:pk>/evaluate/", loop_views.evaluate, name="loop-evaluate"),
    path("runs/loop/<int:pk>/judge/", loop_views.judge, name="loop-judge"),
]
