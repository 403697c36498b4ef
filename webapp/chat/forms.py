from django import forms

from webapp.chat.catalog import available_models
from webapp.chat.models import Conversation


class SettingsForm(forms.ModelForm):
    """Per-conversation sampling settings; answers copy them when they start."""

    temperature = forms.FloatField(min_value=0.0, max_value=2.0)
    top_p = forms.FloatField(min_value=0.01, max_value=1.0)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096)

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
