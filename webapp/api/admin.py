from django.contrib import admin

from webapp.api.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "revoked"]
    list_filter = ["revoked"]
    readonly_fields = ["prefix", "key_hash", "created_at"]
    raw_id_fields = ["user"]
