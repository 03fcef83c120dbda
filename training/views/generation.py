"""Generation jobs (a model samples candidates for a project, or a diffusion model image pairs for an
image-pair project) and the automatic step check of a step-wise project, with its proposals to review.
Project managers only."""

from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.access import project_member_required
from annotation.forms import add_validation_error
from annotation.models import TaskType
from annotation.services.step_pipeline import step_proposals
from jobs.pages import job_page

from ..models import GenerationJob, GenerationKind, ModelEntry, ModelKind
from ..selectors import candidate_scores_for_project, models_for_user
from ..services.generation import (
    GenerationSettings,
    generation_job_cancel,
    generation_job_create,
    generation_job_progress,
)
from ..services.image_generation import (
    MAX_CAPTION_CHARS,
    MAX_CAPTIONS,
    MAX_K,
    ImageGenerationSettings,
    captions_of_project,
    captions_parse,
    image_generation_job_create,
)
from ..services.registry import BUNDLED_NAME, DIGITS_NAME
from ..services.rlhf import model_label
from ..services.scoring import reward_scores_job_create


class GenerationForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=ModelEntry.objects.none(), required=False, empty_label="SmolLM2-135M-Instruct (bundled)"
    )
    k = forms.IntegerField(min_value=1, max_value=16, initial=2, label="Responses per item (K)")
    temperature = forms.FloatField(min_value=0.01, max_value=2, initial=0.8)
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=0.95, label="Top-p")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=2048, initial=128, label="Max new tokens")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        entries = models_for_user(user=user).filter(kind=ModelKind.CAUSAL_LM).exclude(name=BUNDLED_NAME)
        self.fields["model"].queryset = entries

    def settings(self) -> GenerationSettings:
        keys = ("k", "temperature", "top_p", "max_new_tokens", "seed")
        return GenerationSettings(**{key: self.cleaned_data[key] for key in keys})


class ImageGenerationForm(forms.Form):
    """Image pairs for an image-pair project: captions from its items or typed, K images per caption."""

    model = forms.ModelChoiceField(
        queryset=ModelEntry.objects.none(), required=False, empty_label="Handwritten digits (embedded)"
    )
    caption_source = forms.ChoiceField(
        choices=[("items", "The captions of this project's items"), ("typed", "The captions typed below")],
        initial="typed",
        widget=forms.RadioSelect,
        label="Captions",
    )
    captions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        label="Typed captions",
        help_text=f"One per line; at most {MAX_CAPTIONS}, each at most {MAX_CAPTION_CHARS} characters.",
    )
    k = forms.IntegerField(min_value=2, max_value=MAX_K, initial=2, label="Images per caption (K)")
    steps = forms.IntegerField(min_value=1, max_value=200, initial=25, label="Sampling steps")
    guidance_scale = forms.FloatField(min_value=1, max_value=20, initial=3.0, label="Guidance scale")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        entries = models_for_user(user=user).filter(kind=ModelKind.DIFFUSION).exclude(name=DIGITS_NAME)
        self.fields["model"].queryset = entries

    def clean(self):
        data = super().clean()
        if data.get("caption_source") == "items":
            data["caption_list"] = captions_of_project(project=self.project)
            if not data["caption_list"]:
                self.add_error("caption_source", "This project's items have no captions yet: type some.")
        elif data.get("caption_source") == "typed":
            data["caption_list"] = captions_parse(data.get("captions", ""))
        return data

    def settings(self) -> ImageGenerationSettings:
        keys = ("k", "steps", "guidance_scale", "seed")
        values = {key: self.cleaned_data[key] for key in keys}
        return ImageGenerationSettings(captions=self.cleaned_data["caption_list"], **values)


class RewardScoringForm(forms.Form):
    """Score every candidate of the project with a reward model the user may see."""

    model = forms.ModelChoiceField(queryset=ModelEntry.objects.none(), label="Reward model")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models_for_user(user=user, kinds=[ModelKind.REWARD_MODEL])


def _start_image_job(request, form):
    if not form.is_valid():
        return None
    try:
        return image_generation_job_create(
            project=request.project,
            settings=form.settings(),
            model=form.cleaned_data["model"],
            created_by=request.user,
        )
    except ValidationError as error:
        add_validation_error(form, error)
        return None


def _start_job(request, form, kind: str):
    """Validate the form and queue a job; returns the job or None (errors are on the form)."""
    if not form.is_valid():
        return None
    try:
        return generation_job_create(
            project=request.project,
            settings=form.settings(),
            model=form.cleaned_data["model"],
            kind=kind,
            created_by=request.user,
        )
    except ValidationError as error:
        add_validation_error(form, error)
        return None


def _generation_page(request, form, status=200, score_form=None):
    kinds = (GenerationKind.CANDIDATES, GenerationKind.IMAGE_PAIRS, GenerationKind.REWARD_SCORES)
    jobs = list(GenerationJob.objects.filter(project=request.project, kind__in=kinds)[:20])
    images = request.project.task_type == TaskType.IMAGE_PAIR
    for job in jobs:
        job.model_label = model_label(job.model_spec)
    context = {"project": request.project, "form": form, "jobs": jobs, "image_pairs": images}
    if not images:
        context["score_form"] = score_form or RewardScoringForm(user=request.user)
        context["scores"] = candidate_scores_for_project(project=request.project)
    return render(request, "training/generation_list.html", context, status=status)


def _form_for(request, data=None):
    if request.project.task_type == TaskType.IMAGE_PAIR:
        return ImageGenerationForm(data, user=request.user, project=request.project)
    return GenerationForm(data, user=request.user)


@require_GET
@project_member_required(manager=True)
def generation_list(request, project_id):
    return _generation_page(request, _form_for(request))


@require_POST
@project_member_required(manager=True)
def generation_start(request, project_id):
    form = _form_for(request, request.POST)
    if isinstance(form, ImageGenerationForm):
        job = _start_image_job(request, form)
    else:
        job = _start_job(request, form, GenerationKind.CANDIDATES)
    if job is None:
        return _generation_page(request, form, status=400)
    return redirect("generation-detail", project_id=project_id, job_id=job.pk)


@require_POST
@project_member_required(manager=True)
def reward_scores_start(request, project_id):
    form = RewardScoringForm(request.POST, user=request.user)
    job = None
    if form.is_valid():
        try:
            job = reward_scores_job_create(
                project=request.project, model=form.cleaned_data["model"], created_by=request.user
            )
        except ValidationError as error:
            add_validation_error(form, error)
    if job is None:
        return _generation_page(request, _form_for(request), status=400, score_form=form)
    return redirect("generation-detail", project_id=project_id, job_id=job.pk)


@require_POST
@project_member_required(manager=True)
def generation_cancel(request, project_id, job_id):
    job = get_object_or_404(GenerationJob, pk=job_id, project=request.project)
    generation_job_cancel(job=job)
    return redirect("generation-detail", project_id=project_id, job_id=job.pk)


@require_GET
@project_member_required(manager=True)
def generation_detail(request, project_id, job_id):
    job = get_object_or_404(GenerationJob, pk=job_id, project=request.project)
    context = {
        "project": request.project,
        "job": job,
        "model_label": model_label(job.model_spec),
        **generation_job_progress(job),
    }
    return job_page(
        request, "training/generation_job.html", "job-progress", context, finished=context["finished"]
    )


def _steps_page(request, form, status=200):
    project = request.project
    jobs = GenerationJob.objects.filter(project=project, kind=GenerationKind.STEP_PIPELINE)[:10]
    context = {
        "project": project,
        "form": form,
        "jobs": jobs,
        "proposals": step_proposals(project=project)[:50],
    }
    return render(request, "training/step_review.html", context, status=status)


@require_GET
@project_member_required(manager=True)
def step_review(request, project_id):
    return _steps_page(request, GenerationForm(initial={"k": 4}, user=request.user))


@require_POST
@project_member_required(manager=True)
def step_pipeline_start(request, project_id):
    form = GenerationForm(request.POST, user=request.user)
    job = _start_job(request, form, GenerationKind.STEP_PIPELINE)
    if job is None:
        return _steps_page(request, form, status=400)
    return redirect("generation-detail", project_id=project_id, job_id=job.pk)
