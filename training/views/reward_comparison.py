"""DPO implicit reward vs an explicit reward model under a distribution shift (Lin et al.'s DPORM vs
EXRM): a form to pick a dataset version, a finished DPO-family job, a reward model and the shift rule, and
each comparison's results.  Project members see the results; managers start comparisons."""

from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.access import project_member_required
from annotation.forms import add_validation_error
from annotation.models import DatasetVersion
from jobs.models import JobState
from jobs.pages import job_page
from training.engine.lm.shift import LENGTH_UNITS, SHIFT_KINDS, ShiftRule

from ..charts import reward_comparison_bars
from ..models import ModelKind, RewardComparison, TrainingJob
from ..selectors import models_for_user, reward_comparisons_for_project
from ..services.generation import generation_job_progress
from ..services.reward_comparison import RULE_FIELDS, is_dpo_family, reward_comparison_create

KIND_LABELS = {
    "source": "By source: rows whose source is listed are shifted",
    "metadata": "By a metadata field: rows whose value is listed are shifted",
    "prompt_length": "By prompt length: prompts longer than the threshold are shifted",
}


class RewardComparisonForm(forms.Form):
    dataset_version = forms.ModelChoiceField(queryset=DatasetVersion.objects.none(), label="Dataset version")
    policy_job = forms.ModelChoiceField(queryset=TrainingJob.objects.none(), label="DPO-family job")
    reward_model = forms.ModelChoiceField(queryset=None, label="Reward model")
    rule_kind = forms.ChoiceField(choices=[(k, KIND_LABELS[k]) for k in SHIFT_KINDS], label="Shift rule")
    values = forms.CharField(
        required=False, max_length=2000, help_text="Source or metadata values, comma-separated."
    )
    key = forms.CharField(required=False, max_length=200, label="Metadata key")
    threshold = forms.IntegerField(required=False, min_value=0, max_value=1_000_000)
    unit = forms.ChoiceField(choices=[(u, u) for u in LENGTH_UNITS], initial="chars")

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = DatasetVersion.objects.filter(project=project).order_by(
            "-number"
        )
        finished = TrainingJob.objects.filter(
            dataset_version__project=project, state=JobState.SUCCEEDED, produced_model__isnull=False
        ).select_related("dataset_version")
        self.fields["policy_job"].queryset = finished.filter(
            method__in=[m for m in finished.values_list("method", flat=True).distinct() if is_dpo_family(m)]
        )
        self.fields["policy_job"].label_from_instance = lambda job: (
            f"job {job.pk} · {job.method} on v{job.dataset_version.number}"
        )
        self.fields["reward_model"].queryset = models_for_user(user=user, kinds=[ModelKind.REWARD_MODEL])

    def clean(self):
        data = super().clean()
        if "rule_kind" not in data:
            return data
        values = tuple(v.strip() for v in (data.get("values") or "").split(",") if v.strip())
        try:
            data["rule"] = ShiftRule(
                kind=data["rule_kind"],
                values=values,
                key=(data.get("key") or "").strip(),
                threshold=data.get("threshold"),
                unit=data.get("unit") or "chars",
            )
        except ValueError as error:
            field, _, message = str(error).partition(": ")
            self.add_error(RULE_FIELDS.get(field, "rule_kind"), message)
        return data


def _page(request, form, status=200):
    comparisons = reward_comparisons_for_project(project=request.project)
    context = {
        "project": request.project,
        "form": form,
        "comparisons": comparisons,
        "is_manager": request.project_role == "manager",
    }
    return render(request, "training/reward_comparison_list.html", context, status=status)


@require_GET
@project_member_required()
def reward_comparison_list(request, project_id):
    return _page(request, RewardComparisonForm(user=request.user, project=request.project))


@require_POST
@project_member_required(manager=True)
def reward_comparison_start(request, project_id):
    form = RewardComparisonForm(request.POST, user=request.user, project=request.project)
    comparison = None
    if form.is_valid():
        try:
            comparison = reward_comparison_create(
                version=form.cleaned_data["dataset_version"],
                policy_job=form.cleaned_data["policy_job"],
                reward_model=form.cleaned_data["reward_model"],
                rule=form.cleaned_data["rule"],
                created_by=request.user,
            )
        except ValidationError as error:
            add_validation_error(form, error)
    if comparison is None:
        return _page(request, form, status=400)
    return redirect("reward-comparison-detail", project_id=project_id, comparison_id=comparison.pk)


@require_GET
@project_member_required()
def reward_comparison_detail(request, project_id, comparison_id):
    comparison = get_object_or_404(
        RewardComparison.objects.select_related("job", "dataset_version", "policy_job", "reward_model"),
        pk=comparison_id,
        dataset_version__project=request.project,
    )
    job = comparison.job
    context = {
        "project": request.project,
        "comparison": comparison,
        "job": job,
        "rule": ShiftRule.from_dict(comparison.rule).describe(),
        "bars": reward_comparison_bars(comparison.result) if comparison.result else None,
        **generation_job_progress(job),
    }
    return job_page(
        request,
        "training/reward_comparison_detail.html",
        "comparison-result",
        context,
        finished=context["finished"],
    )
