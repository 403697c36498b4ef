"""The ratings store in the Django admin, with an "Import prompts" view on prompt
sets (the same all-or-nothing import as the researchers' upload page)."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from webapp.ratings.forms import PromptUploadForm
from webapp.ratings.models import (
    Answer,
    Assignment,
    Campaign,
    Item,
    Prompt,
    PromptSet,
    Rater,
    Rating,
)


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ["name", "builtin", "prompt_count", "created_by", "created_at"]
    list_filter = ["builtin"]
    search_fields = ["name"]
    raw_id_fields = ["created_by"]
    change_list_template = "ratings/admin/promptset_change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(prompt_count=Count("prompts"))

    @admin.display(ordering="prompt_count")
    def prompt_count(self, prompt_set) -> int:
        return prompt_set.prompt_count

    def get_urls(self):
        view = self.admin_site.admin_view(self.import_prompts_view)
        return [
            path("import/", view, name="ratings_promptset_import"),
            *super().get_urls(),
        ]

    def import_prompts_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PromptUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            imported = form.import_prompts(request.user)
            if imported is not None:
                prompt_set, count = imported
                messages.success(
                    request, f"Imported {count} prompts into {prompt_set}."
                )
                return redirect(
                    reverse("admin:ratings_promptset_change", args=[prompt_set.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import prompts",
            "form": form,
        }
        status = 400 if form.is_bound else 200
        return TemplateResponse(
            request, "ratings/admin/import_prompts.html", context, status=status
        )


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["external_id", "prompt_set", "category", "short_text"]
    list_filter = ["prompt_set", "category"]
    search_fields = ["external_id", "text"]
    raw_id_fields = ["prompt_set"]

    @admin.display(description="text")
    def short_text(self, prompt) -> str:
        return prompt.text[:80]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status",
        "source",
        "model",
        "baseline",
        "prompt_set",
        "ratings_per_item",
        "created_at",
    ]
    list_filter = ["status", "source"]
    search_fields = ["name", "model", "baseline"]
    raw_id_fields = ["prompt_set", "created_by"]
    filter_horizontal = ["raters"]


@admin.register(Answer)
class AnswerAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "prompt", "model", "status", "degraded"]
    list_filter = ["status", "degraded", "campaign"]
    search_fields = ["model", "text"]
    raw_id_fields = ["campaign", "prompt"]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "prompt", "gold", "needed", "taken", "rated"]
    list_filter = ["campaign", "gold"]
    raw_id_fields = ["campaign", "prompt", "answer_a", "answer_b"]


@admin.register(Rater)
class RaterAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "user"]
    list_filter = ["kind"]
    search_fields = ["name"]
    raw_id_fields = ["user"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = [
        "token",
        "item",
        "rater",
        "left",
        "status",
        "leased_at",
        "expires_at",
    ]
    list_filter = ["status", "left"]
    search_fields = ["token", "rater__name"]
    raw_id_fields = ["item", "rater", "repeat_of"]


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "item",
        "rater",
        "score",
        "left",
        "both_bad",
        "unsafe_a",
        "unsafe_b",
        "source",
        "gold",
        "repeat",
        "created_at",
    ]
    list_filter = ["source", "gold", "repeat", "both_bad", "item__campaign"]
    search_fields = ["rater__name", "rationale"]
    raw_id_fields = ["item", "rater", "assignment"]
