"""Preference training across domains: the form that starts a stream (a project's versions as domains, in
version order), the project's streams, and each stream's page with the three forgetting matrices side by
side, polled while it trains.  Members see them; managers start and cancel them
(``services/domain_streams.py``)."""

from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.access import project_member_required
from annotation.forms import add_validation_error
from annotation.models import DatasetVersion
from jobs.pages import job_page

from ..domain_charts import forgetting_rows, matrix_charts
from ..models import DomainStream, ModelKind
from ..selectors import models_for_user
from ..services.domain_streams import TEXT_PAIR_TYPES, domain_stream_cancel, domain_stream_create

SETTING_FIELDS = (
    "learning_rate",
    "max_steps",
    "batch_size",
    "lora_r",
    "fast_lr_ratio",
    "chase_weight",
    "seed",
)


class DomainStreamForm(forms.Form):
    name = forms.CharField(max_length=200)
    base_model = forms.ModelChoiceField(queryset=None, label="Base model")
    versions = forms.ModelMultipleChoiceField(
        queryset=DatasetVersion.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        label="Domains",
        help_text="Two or more dataset versions; they are trained in version order, each its own domain.",
    )
    learning_rate = forms.FloatField(required=False, help_text="DPO's and the slow module's. Empty: 1e-4.")
    max_steps = forms.IntegerField(
        min_value=1, required=False, label="Steps per domain", help_text="Empty: 24."
    )
    batch_size = forms.IntegerField(min_value=1, max_value=512, required=False, help_text="Empty: 8.")
    lora_r = forms.IntegerField(
        min_value=1, max_value=256, required=False, label="LoRA rank", help_text="Empty: 8."
    )
    fast_lr_ratio = forms.FloatField(
        min_value=1, required=False, label="Fast ÷ slow learning rate", help_text="Empty: 4."
    )
    chase_weight = forms.FloatField(
        min_value=0, required=False, label="Chase weight λ", help_text="Empty: 0.1."
    )
    weights = forms.CharField(
        required=False,
        label="COFS weights",
        help_text="One per domain, e.g. 1, 1 (relative). Empty: chosen on a held-out mix of those seen.",
    )
    seed = forms.IntegerField(min_value=0, required=False, help_text="Empty: 0.")

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["base_model"].queryset = models_for_user(user=user, kinds=[ModelKind.CAUSAL_LM])
        self.fields["versions"].queryset = DatasetVersion.objects.filter(project=project).order_by("number")
        self.fields["versions"].label_from_instance = lambda v: (
            f"v{v.number} · {v.stats.get('train', 0)} train, {v.stats.get('test', 0)} held-out rows"
        )

    def clean_weights(self):
        text = (self.cleaned_data.get("weights") or "").strip()
        if not text:
            return None
        try:
            return [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            raise ValidationError("Weights are numbers separated by commas, e.g. 1, 1.") from None

    def stream_settings(self) -> dict:
        data = self.cleaned_data
        given = {name: data[name] for name in SETTING_FIELDS if data.get(name) not in (None, "")}
        return {**given, "weights": data["weights"]} if data.get("weights") else given


def _page(request, form, status=200):
    context = {
        "project": request.project,
        "form": form,
        "streams": DomainStream.objects.filter(project=request.project).select_related("base_model"),
        "is_manager": request.project_role == "manager",
        "text_project": request.project.task_type in TEXT_PAIR_TYPES,
    }
    return render(request, "training/domain_stream_list.html", context, status=status)


@require_GET
@project_member_required()
def domain_stream_list(request, project_id):
    return _page(request, DomainStreamForm(user=request.user, project=request.project))


@require_POST
@project_member_required(manager=True)
def domain_stream_start(request, project_id):
    form = DomainStreamForm(request.POST, user=request.user, project=request.project)
    stream = None
    if form.is_valid():
        try:
            stream = domain_stream_create(
                name=form.cleaned_data["name"],
                project=request.project,
                base_model=form.cleaned_data["base_model"],
                versions=sorted(form.cleaned_data["versions"], key=lambda v: v.number),
                settings=form.stream_settings(),
                created_by=request.user,
            )
        except ValidationError as error:
            add_validation_error(form, _form_fields(error))
    if stream is None:
        return _page(request, form, status=400)
    return redirect("domain-stream-detail", project_id=project_id, stream_id=stream.pk)


def _form_fields(error: ValidationError) -> ValidationError:
    """The service names settings ``settings.<field>``; the form has them as ``<field>``."""
    if not hasattr(error, "error_dict"):
        return error
    return ValidationError({n.removeprefix("settings."): m for n, m in error.message_dict.items()})


def _stream(request, stream_id) -> DomainStream:
    return get_object_or_404(
        DomainStream.objects.select_related("base_model"), pk=stream_id, project=request.project
    )


@require_GET
@project_member_required()
def domain_stream_detail(request, project_id, stream_id):
    stream = _stream(request, stream_id)
    versions = DatasetVersion.objects.in_bulk(stream.versions)
    context = {
        "project": request.project,
        "stream": stream,
        "domains": [versions[pk] for pk in stream.versions if pk in versions],
        "charts": matrix_charts(stream),
        "rows": forgetting_rows(stream),
        "is_manager": request.project_role == "manager",
    }
    return job_page(
        request, "training/domain_stream_detail.html", "stream-status", context, finished=stream.finished
    )


@require_POST
@project_member_required(manager=True)
def domain_stream_cancel_view(request, project_id, stream_id):
    domain_stream_cancel(stream=_stream(request, stream_id))
    return redirect("domain-stream-detail", project_id=project_id, stream_id=stream_id)
