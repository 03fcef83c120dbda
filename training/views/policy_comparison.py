"""PPO vs DPO on one dataset version's held-out prompts: a form to pick the version, a finished DPO-family
job, a finished PPO-family job and a reward model, and each comparison's table (mean reward-model score,
win rate against the base, KL to the base, response length) with example responses.  Project members see
the results; managers start comparisons."""

from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.access import project_member_required
from annotation.forms import add_validation_error
from annotation.models import DatasetVersion
from jobs.models import JobState
from jobs.pages import job_page

from ..models import ModelKind, PolicyComparison, TrainingJob
from ..selectors import models_for_user, policy_comparisons_for_project
from ..services.generation import generation_job_progress
from ..services.policy_comparison import (
    MAX_NEW_TOKENS,
    is_ppo_family,
    policy_comparison_create,
)
from ..services.reward_comparison import is_dpo_family

ROWS = (("base", "Base model"), ("dpo", "DPO"), ("ppo", "PPO"))
"""The table's rows: result key and label."""


def _job_label(job: TrainingJob) -> str:
    return f"job {job.pk} · {job.method} on v{job.dataset_version.number} · from {job.base_model.name}"


class PolicyComparisonForm(forms.Form):
    dataset_version = forms.ModelChoiceField(queryset=DatasetVersion.objects.none(), label="Dataset version")
    dpo_job = forms.ModelChoiceField(queryset=TrainingJob.objects.none(), label="DPO-family job")
    ppo_job = forms.ModelChoiceField(queryset=TrainingJob.objects.none(), label="PPO or RTO job")
    reward_model = forms.ModelChoiceField(
        queryset=None,
        required=False,
        label="Reward model",
        help_text="Scores every response; empty: the reward model the PPO job trained against.",
    )
    max_new_tokens = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_NEW_TOKENS,
        label="Max new tokens",
        help_text="Empty: the PPO job's max_new_tokens.",
    )

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = DatasetVersion.objects.filter(project=project).order_by(
            "-number"
        )
        finished = TrainingJob.objects.filter(
            dataset_version__project=project, state=JobState.SUCCEEDED, produced_model__isnull=False
        ).select_related("dataset_version", "base_model")
        methods = list(finished.values_list("method", flat=True).distinct())
        for name, check in (("dpo_job", is_dpo_family), ("ppo_job", is_ppo_family)):
            self.fields[name].queryset = finished.filter(method__in=[m for m in methods if check(m)])
            self.fields[name].label_from_instance = _job_label
        self.fields["reward_model"].queryset = models_for_user(user=user, kinds=[ModelKind.REWARD_MODEL])


def _page(request, form, status=200):
    context = {
        "project": request.project,
        "form": form,
        "comparisons": policy_comparisons_for_project(project=request.project),
        "is_manager": request.project_role == "manager",
    }
    return render(request, "training/policy_comparison_list.html", context, status=status)


@require_GET
@project_member_required()
def policy_comparison_list(request, project_id):
    return _page(request, PolicyComparisonForm(user=request.user, project=request.project))


@require_POST
@project_member_required(manager=True)
def policy_comparison_start(request, project_id):
    form = PolicyComparisonForm(request.POST, user=request.user, project=request.project)
    comparison = None
    if form.is_valid():
        try:
            comparison = policy_comparison_create(
                version=form.cleaned_data["dataset_version"],
                dpo_job=form.cleaned_data["dpo_job"],
                ppo_job=form.cleaned_data["ppo_job"],
                reward_model=form.cleaned_data["reward_model"],
                max_new_tokens=form.cleaned_data["max_new_tokens"],
                created_by=request.user,
            )
        except ValidationError as error:
            add_validation_error(form, error)
    if comparison is None:
        return _page(request, form, status=400)
    return redirect("policy-comparison-detail", project_id=project_id, comparison_id=comparison.pk)


def table_rows(comparison: PolicyComparison) -> list[dict]:
    """One row per model (base, DPO, PPO): its label, job, method and the engine's summary."""
    models = (comparison.result or {}).get("models", {})
    jobs = {"dpo": comparison.dpo_job, "ppo": comparison.ppo_job}
    prov = comparison.provenance
    return [
        {
            "key": key,
            "label": label if key == "base" else f"{label} ({prov[key]['method']})",
            "job": jobs.get(key),
            "name": prov[key]["name"],
            **models.get(key, {}),
        }
        for key, label in ROWS
    ]


def prompt_text(prompt) -> str:
    """A prompt as the page shows it: the text, or chat messages as ``role: content`` lines."""
    if isinstance(prompt, list):
        return "\n".join(
            f"{m.get('role', '')}: {m.get('content', '')}" for m in prompt if isinstance(m, dict)
        )
    return str(prompt)


def example_rows(comparison: PolicyComparison) -> list[dict]:
    """The stored examples: prompt text and, per model in table order, its response row."""
    return [
        {"prompt": prompt_text(example.get("prompt", "")), "cells": [example.get(key, {}) for key, _ in ROWS]}
        for example in (comparison.result or {}).get("examples", [])
    ]


@require_GET
@project_member_required()
def policy_comparison_detail(request, project_id, comparison_id):
    comparison = get_object_or_404(
        PolicyComparison.objects.select_related(
            "job", "dataset_version", "dpo_job", "ppo_job", "reward_model"
        ),
        pk=comparison_id,
        dataset_version__project=request.project,
    )
    job = comparison.job
    context = {
        "project": request.project,
        "comparison": comparison,
        "job": job,
        "rows": table_rows(comparison),
        "examples": example_rows(comparison),
        "columns": [label for _, label in ROWS],
        **generation_job_progress(job),
    }
    return job_page(
        request,
        "training/policy_comparison_detail.html",
        "comparison-result",
        context,
        finished=context["finished"],
    )
