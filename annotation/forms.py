from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from .models import Project, Role


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "task_type", "overlap", "assignment_ttl_minutes", "guidelines"]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 8})}

    def clean_overlap(self):
        overlap = self.cleaned_data["overlap"]
        if not 1 <= overlap <= 50:
            raise forms.ValidationError("Overlap must be between 1 and 50 judgments per task.")
        return overlap


class ProjectSettingsForm(ProjectForm):
    class Meta(ProjectForm.Meta):
        fields = ["name", "overlap", "assignment_ttl_minutes", "guidelines"]


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)

    def clean_username(self):
        username = self.cleaned_data["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(f"No user named {username!r}.")
        self.cleaned_data["user"] = user
        return username


class AccountCreateForm(forms.Form):
    """A new account for the project; ``account_create_for_project`` validates the name and email."""

    username = forms.CharField(max_length=150, help_text="Letters, digits and @ . + - _ only.")
    email = forms.CharField(max_length=254, required=False, help_text="Optional; no mail is sent.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)


def add_validation_error(form: forms.Form, error: ValidationError) -> None:
    """A service's ValidationError onto the form: per field where it names one, else as a form error."""
    if hasattr(error, "error_dict"):
        for field, messages in error.message_dict.items():
            form.add_error(field if field in form.fields else None, messages)
    else:
        form.add_error(None, error.messages)
