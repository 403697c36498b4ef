from django import forms

from webapp.chat.models import Conversation
from webapp.core.serving import available_models


class SettingsForm(forms.ModelForm):
    """Per-conversation sampling settings; answers copy them when they start."""

    class Meta:
        model = Conversation
        fields = ["temperature", "top_p", "max_new_tokens"]


class NewConversationForm(SettingsForm):
    model_name = forms.ChoiceField(label="Model")

    class Meta(SettingsForm.Meta):
        fields = ["model_name", *SettingsForm.Meta.fields]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_name"].choices = [(m, m) for m in available_models()]
