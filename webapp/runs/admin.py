"""Runs and the model catalog in the Django admin. Runs are read here, not edited:
their changes (cancel, resume, delete, register) go through the run pages, which
keep the worker, the run's directory and the catalog in step. A catalog model saved
here is published to the workers; none is deleted here, since nothing would tell the
workers to stop serving it."""

from django.contrib import admin
from django.db import transaction

from webapp.runs import services
from webapp.runs.models import CatalogModel, Run


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "status",
        "step",
        "steps",
        "created_by",
        "created_at",
    ]
    list_filter = ["kind", "status", "created_at"]
    search_fields = ["name", "data_source"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_model", "run", "context_length", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "base_model", "path"]
    raw_id_fields = ["run", "registered_by"]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        transaction.on_commit(lambda: services.publish(obj))

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
