from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("webapp.core.urls")),
    path("accounts/", include("webapp.accounts.urls")),
    path("chat/", include("webapp.chat.urls")),
    # /rate/, /api/rate/..., /ratings/...
    path("", include("webapp.ratings.urls")),
    path("evals/", include("webapp.evals.urls")),
    # /runs/..., /models/..., /api/models/<name>/score
    path("", include("webapp.runs.urls")),
    # OpenAI clients expect /v1/... at the root of the base URL.
    path("", include("webapp.api.urls")),
    path("admin/", admin.site.urls),
]
