from django.contrib import admin

from webapp.chat.models import Conversation, Message


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "model_name", "updated_at"]
    list_filter = ["model_name"]
    search_fields = ["title", "owner__username"]
    raw_id_fields = ["owner", "current_leaf"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "model_name", "created_at"]
    list_filter = ["role", "status", "model_name"]
    raw_id_fields = ["conversation", "parent"]
