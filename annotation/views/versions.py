"""Agreement, dataset versions (freeze, detail) and their export downloads: project managers only."""

import json
import tempfile
from dataclasses import asdict

from django import forms
from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from jobs.models import JobState
from jobs.pages import job_page

from ..access import project_member_required
from ..models import DatasetVersion, FreezeJob, TaskType
from ..selectors_items import disagreeing_tasks
from ..services.agreement import project_agreement
from ..services.exports import SPLITS, export_filename, export_write, jsonl_lines, ordered, project_slug
from ..services.freeze_jobs import freeze_job_create
from ..services.versions import FreezeRule, current_rows, freeze_preview, version_rows

SAMPLE_ROWS = 20
TYPE_MEASURED = (TaskType.RANKING, TaskType.STEPWISE, TaskType.FACTUALITY)
"""Project types whose agreement page leads with their own measure (Kendall τ, per step, per sentence)."""


class FreezeForm(forms.Form):
    min_votes = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    min_strength = forms.TypedChoiceField(
        choices=[("", "any"), ("1", "1"), ("2", "2"), ("3", "3")],
        coerce=int,
        empty_value=None,
        required=False,
    )
    min_agreement = forms.FloatField(min_value=0, max_value=1, initial=0.5)
    drop_ties = forms.BooleanField(required=False, initial=True)
    drop_both_bad = forms.BooleanField(required=False, initial=True)
    seed = forms.IntegerField(initial=0, min_value=-(2**31), max_value=2**31 - 1)
    test_fraction = forms.FloatField(min_value=0, max_value=0.99, initial=0.1)

    def rule(self) -> FreezeRule:
        data = self.cleaned_data
        keys = ("min_votes", "min_strength", "min_agreement", "drop_ties", "drop_both_bad")
        return FreezeRule(**{key: data[key] for key in keys})


@require_GET
@project_member_required(manager=True)
def agreement(request, project_id):
    report = project_agreement(project=request.project)
    annotators = [
        {"name": report.annotators.get(pk, str(pk)), **figures, "percent": round(100 * figures["rate"], 1)}
        for pk, figures in report.majority.items()
    ]
    kappas = [
        {
            **k,
            "a_name": report.annotators.get(k["a"], k["a"]),
            "b_name": report.annotators.get(k["b"], k["b"]),
        }
        for k in report.kappas
    ]
    context = {
        "project": request.project,
        "report": report,
        "annotators": annotators,
        "kappas": kappas,
        "disagreeing_items": len(set(disagreeing_tasks(project=request.project).values())),
        "lead_with_type": request.project.task_type in TYPE_MEASURED,
    }
    return render(request, "annotation/agreement.html", context)


def _version_list(request, form, status=200):
    versions = (
        DatasetVersion.objects.filter(project=request.project)
        .select_related("created_by")
        .order_by("-number")
    )
    context = {"project": request.project, "versions": versions, "form": form}
    return render(request, "annotation/version_list.html", context, status=status)


@require_GET
@project_member_required(manager=True)
def version_list(request, project_id):
    return _version_list(request, FreezeForm())


@require_GET
@project_member_required(manager=True)
def version_freeze_preview(request, project_id):
    """What the freeze form's current settings would make (rows per split, drops by reason, warnings): the
    form asks for it whenever a setting changes."""
    form = FreezeForm(request.GET)
    preview = None
    if form.is_valid():
        try:
            rule = form.rule()
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            preview = freeze_preview(
                project=request.project,
                rule=rule,
                seed=form.cleaned_data["seed"],
                test_fraction=form.cleaned_data["test_fraction"],
            )
    context = {"project": request.project, "preview": preview, "form": form}
    return render(request, "annotation/_freeze_preview.html", context)


@require_GET
@project_member_required(manager=True)
def current_judgments_export(request, project_id):
    """The rows the default freeze rule makes of the current judgments, as JSONL with a split column:
    for inspection, named and marked as not a version (``X-PrefStudio-Not-A-Version``)."""
    project = request.project
    rows = current_rows(project=project, rule=FreezeRule(), seed=0, test_fraction=0.1)
    lines = jsonl_lines(rows, with_split=True)
    response = StreamingHttpResponse((line.encode() for line in lines), content_type="application/jsonl")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    name = f"{project_slug(project)}-current-judgments-not-a-version-{stamp}.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-PrefStudio-Not-A-Version"] = "true"
    return response


@require_POST
@project_member_required(manager=True)
def version_freeze(request, project_id):
    form = FreezeForm(request.POST)
    if not form.is_valid():
        return _version_list(request, form, status=400)
    try:
        rule = form.rule()
    except ValueError as exc:
        form.add_error(None, str(exc))
        return _version_list(request, form, status=400)
    job = freeze_job_create(
        project=request.project,
        user=request.user,
        rule=rule,
        seed=form.cleaned_data["seed"],
        test_fraction=form.cleaned_data["test_fraction"],
    )
    return redirect("freeze-job", project_id=request.project.pk, job_id=job.pk)


@require_GET
@project_member_required(manager=True)
def freeze_job_detail(request, project_id, job_id):
    """The queued freeze's progress, polled by the page; once frozen, the version's page."""
    job = get_object_or_404(FreezeJob.objects.select_related("version"), pk=job_id, project=request.project)
    if job.state == JobState.SUCCEEDED:
        target = reverse("version-detail", args=[request.project.pk, job.version_id])
        if job.version.created_at < job.created_at:
            messages.info(request, f"No new version: {job.version} already holds exactly these rows.")
        if request.htmx:
            return HttpResponseClientRedirect(target)
        return redirect(target)
    finished = job.state == JobState.FAILED
    context = {"project": request.project, "job": job, "finished": finished, "rule": _rule_text(job.rule)}
    return job_page(request, "annotation/freeze_job.html", "freeze-progress", context, finished=finished)


def _rule_text(rule: dict) -> str:
    """The rule as the CLI takes it, in field order: ``min_votes=1, min_strength=none, drop_ties=true, …``."""

    def text(value) -> str:
        return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    return ", ".join(f"{key}={text(value)}" for key, value in asdict(FreezeRule(**rule)).items())


def _split_of(request) -> str:
    split = request.GET.get("split", "all")
    return split if split in SPLITS else "all"


@require_GET
@project_member_required(manager=True)
def version_detail(request, project_id, version_id):
    version = get_object_or_404(DatasetVersion, pk=version_id, project=request.project)
    split = _split_of(request)
    sample = []
    for _, row in version_rows(version=version, split=split):
        sample.append(json.dumps(ordered(row), indent=2, ensure_ascii=False))
        if len(sample) >= SAMPLE_ROWS:
            break
    context = {
        "project": request.project,
        "version": version,
        "split": split,
        "splits": SPLITS,
        "sample": sample,
        "rule_json": json.dumps(version.rule, indent=2),
        "dropped": sorted((version.stats.get("tasks_dropped") or {}).items()),
    }
    return render(request, "annotation/version_detail.html", context)


@require_GET
@project_member_required(manager=True)
def version_export(request, project_id, version_id, fmt):
    version = get_object_or_404(
        DatasetVersion.objects.select_related("project"), pk=version_id, project=request.project
    )
    if fmt not in ("jsonl", "parquet"):
        raise Http404("Unknown export format.")
    split = request.GET.get("split", "all")
    if split not in SPLITS:
        return HttpResponseBadRequest(f"split must be one of {', '.join(SPLITS)}.")
    filename, content_type = export_filename(version=version, fmt=fmt, split=split)
    if filename.endswith(".jsonl"):
        lines = jsonl_lines(version_rows(version=version, split=split), with_split=split == "all")
        response = StreamingHttpResponse((line.encode() for line in lines), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
    out = tempfile.TemporaryFile()  # noqa: SIM115 -- FileResponse closes (and so deletes) it
    export_write(version=version, fmt=fmt, split=split, out=out)
    out.seek(0)
    return FileResponse(out, as_attachment=True, filename=filename, content_type=content_type)
