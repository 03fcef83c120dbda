"""The "try it" box of a trained model's job page: a prompt answered by the base and trained models side by
side, on a generation worker (``services/try_it.py``); the page polls each try until both answers are in."""

from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation.access import project_member_required
from annotation.forms import add_validation_error
from jobs.pages import STOP_POLLING

from ..models import GenerationJob, GenerationKind
from ..selectors import job_for_user
from ..services.generation import generation_job_progress
from ..services.try_it import (
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARS,
    TrySettings,
    tries_for,
    try_it_create,
    try_settings,
)


class TryForm(forms.Form):
    prompt = forms.CharField(
        max_length=MAX_PROMPT_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Ask the models something…"}),
    )
    mode = forms.ChoiceField(choices=[("greedy", "greedy"), ("sample", "sample")], initial="greedy")
    temperature = forms.FloatField(min_value=0.01, max_value=2, initial=0.7)
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=0.9, label="Top-p")
    max_new_tokens = forms.IntegerField(
        min_value=1, max_value=MAX_NEW_TOKENS, initial=64, label="Max new tokens"
    )
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)

    def settings(self) -> TrySettings:
        keys = ("prompt", "mode", "temperature", "top_p", "max_new_tokens", "seed")
        return TrySettings(**{key: self.cleaned_data[key] for key in keys})


def try_entry(try_job: GenerationJob) -> dict:
    """What the page shows of one try."""
    return {"job": try_job, "settings": try_settings(try_job), **generation_job_progress(try_job)}


def try_context(job, form=None) -> dict:
    return {"form": form or TryForm(), "tries": [try_entry(t) for t in tries_for(job)]}


@require_POST
@project_member_required()
def try_it_start(request, project_id, job_id):
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    form = TryForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            try_it_create(job=job, settings=form.settings(), created_by=request.user)
            form, status = TryForm(initial=form.cleaned_data), 200
        except ValidationError as error:
            add_validation_error(form, error)
    if not request.htmx and status == 200:
        return redirect(reverse("job-detail", args=[project_id, job.pk]) + "#try-it")
    context = {"project": request.project, "job": job, "try_it": try_context(job, form)}
    return render(request, "training/_try_it.html", context, status=status)


@require_GET
@project_member_required()
def try_it_detail(request, project_id, job_id, try_id):
    """One try's answers, polled by htmx until both are in (then 286 stops the poll)."""
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    try_job = get_object_or_404(
        GenerationJob,
        pk=try_id,
        kind=GenerationKind.TRY_IT,
        project=request.project,
        options__training_job=job.pk,
    )
    context = {"project": request.project, "job": job, "entry": try_entry(try_job)}
    response = render(request, "training/_try_it_answer.html", context)
    if try_job.finished:
        response.status_code = STOP_POLLING
    return response
