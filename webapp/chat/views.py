"""Chat pages. Sending, stopping and regenerating go over the WebSocket (consumers.py);
these views list, create and show conversations and change their settings."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.chat import services
from webapp.chat.forms import NewConversationForm, SettingsForm
from webapp.core.serving import available_models


@require_GET
def conversation_list(request):
    return render(
        request,
        "chat/conversation_list.html",
        {
            "conversations": request.user.conversations.all(),
            "form": NewConversationForm(),
        },
    )


@require_POST
def conversation_create(request):
    form = NewConversationForm(request.POST)
    if not form.is_valid():
        conversations = request.user.conversations.all()
        context = {"conversations": conversations, "form": form}
        return render(request, "chat/conversation_list.html", context, status=400)
    conversation = services.create_conversation(request.user, **form.cleaned_data)
    return redirect("chat:detail", pk=conversation.pk)


@require_GET
def conversation_detail(request, pk: int):
    conversation = services.get_conversation(request.user, pk)
    return render(
        request,
        "chat/conversation_detail.html",
        {
            **services.branch_context(conversation),
            "settings_form": SettingsForm(instance=conversation),
            "max_chars": services.max_message_chars(),
            "models": available_models(),
        },
    )


@require_POST
def conversation_settings(request, pk: int):
    conversation = services.get_conversation(request.user, pk)
    form = SettingsForm(request.POST, instance=conversation)
    if form.is_valid():
        form.save()
        messages.success(request, "Settings saved; they apply to the next answer.")
    else:
        messages.error(request, f"Settings not saved: {form.errors.as_text()}")
    return redirect("chat:detail", pk=conversation.pk)
