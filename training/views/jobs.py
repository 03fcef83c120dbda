"""The job list (with the disk its jobs use) and the job dashboard: progress, live metrics (JSON after a
cursor), a diffusion job's sample grid (its images served from the job's artifacts), a PPO/RTO job's latest
rollouts, downloads, cancel, and deleting a finished job's checkpoints or the job."""

import csv
import io
import json
import zipfile

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation.access import project_member_required
from annotation.models import Role
from jobs.pages import STOP_POLLING, job_page

from ..charts import chart_panels
from ..models import Artifact, Queue
from ..selectors import (
    artifact_usage_for_project,
    artifacts_for,
    job_for_user,
    job_progress,
    jobs_for_project,
    metrics_after,
    metrics_table,
    sample_artifacts,
)
from ..services.artifacts import artifact_path, sample_file, sample_manifest
from ..services.job_storage import job_artifacts_delete, job_delete
from ..services.joblog import log_tail
from ..services.jobs import training_job_cancel
from ..services.prompt_sources import prompt_source_label
from ..services.registry import method_is_diffusion, model_kind_trained
from ..services.rlhf import latest_rollouts, method_samples_policy
from ..services.slurm import sbatch_script
from ..services.try_it import try_it_problem
from .try_it import try_context


def _cursor(request) -> int:
    try:
        return max(0, int(request.GET.get("after", "0")))
    except ValueError:
        return 0


@require_GET
@project_member_required()
def job_list(request, project_id):
    jobs = jobs_for_project(project=request.project)
    version = None
    if request.GET.get("version", "").isdigit():
        version = request.project.versions.filter(pk=int(request.GET["version"])).first()
        jobs = jobs.filter(dataset_version=version)
    return render(
        request,
        "training/job_list.html",
        {
            "project": request.project,
            "jobs": jobs,
            "version": version,
            "is_manager": request.project_role == Role.MANAGER,
            "usage": artifact_usage_for_project(project=request.project),
        },
    )


def _chosen_step(request) -> int | None:
    raw = request.GET.get("step", "")
    return int(raw) if raw.isdigit() and len(raw) < 10 else None


def _samples_context(request, job) -> dict | None:
    """The sample grid of a diffusion job: the steps that have samples, the one shown (``?step=N``, else
    the latest, followed while the job runs) and its samples; None for a text job."""
    if not method_is_diffusion(job.method):
        return None
    by_step = sample_artifacts(job=job)
    chosen = _chosen_step(request)
    pinned = chosen in by_step
    step = chosen if pinned else next(reversed(by_step), None)
    samples = sample_manifest(by_step[step]) if step is not None else []
    return {"steps": list(by_step), "step": step, "pinned": pinned, "samples": samples}


def _detail_context(request, job) -> dict:
    panels = chart_panels(model_kind=model_kind_trained(job.method), method=job.method)
    chart_config = {
        "metricsUrl": reverse("job-metrics", args=[job.dataset_version.project_id, job.pk]),
        "panels": panels,
        "finished": job.finished,
        "pollSeconds": 2,
    }
    artifacts = list(artifacts_for(job=job))
    is_manager = request.project_role == Role.MANAGER
    outside = is_manager and job.queue == Queue.SLURM and not job.finished
    return {
        "sbatch": sbatch_script(job, studio_url=request.build_absolute_uri("/")) if outside else None,
        "project": request.project,
        "job": job,
        "progress": job_progress(job=job),
        "artifacts": artifacts,
        "sample_count": sum(a.kind == "samples" for a in artifacts),  # shown folded: PPO writes one per batch
        "log": log_tail(job),
        "is_manager": is_manager,
        "panels": panels,
        "chart_config": chart_config,
        "samples": _samples_context(request, job),
        "rollouts": latest_rollouts(job=job) if method_samples_policy(job.method) else None,
        "samples_policy": method_samples_policy(job.method),
        "prompt_source": prompt_source_label(job.config) if method_samples_policy(job.method) else None,
        "try_it": try_context(job) if job.state == "succeeded" and try_it_problem(job) is None else None,
    }


@require_GET
@project_member_required()
def job_detail(request, project_id, job_id):
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    context = _detail_context(request, job)
    parts = {"samples": "job-samples", "rollouts": "job-rollouts"}
    fragment = parts.get(request.GET.get("part", ""), "job-progress")
    return job_page(request, "training/job_detail.html", fragment, context, finished=job.finished)


@require_GET
@project_member_required()
def job_sample(request, project_id, job_id, step, name):
    """One PNG of a sample folder artifact: only a file its ``samples.json`` lists, never another path."""
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    artifact = sample_artifacts(job=job).get(step)
    path = sample_file(artifact, name) if artifact is not None else None
    if path is None or not path.is_file():
        raise Http404("No such sample.")
    response = FileResponse(path.open("rb"), content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"  # a step's folder is written once
    return response


@require_GET
@project_member_required()
def job_metrics(request, project_id, job_id):
    """Points after ``?after=STEP`` as JSON; status 286 once the job has ended and nothing is left."""
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    names = [n for n in request.GET.get("names", "").split(",") if n]
    points, cursor, more = metrics_after(job_id=job.pk, cursor=_cursor(request), names=names or None)
    body = {"points": points, "cursor": cursor, "more": more, "state": job.state, "finished": job.finished}
    return JsonResponse(body, status=STOP_POLLING if job.finished and not more else 200)


def _csv_rows(job_id):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["step", "name", "value", "wall_time"])
    for row in metrics_table(job_id=job_id):
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _json_rows(job_id):
    yield "["
    for i, (step, name, value, wall) in enumerate(metrics_table(job_id=job_id)):
        yield ("," if i else "") + json.dumps({"step": step, "name": name, "value": value, "wall_time": wall})
    yield "]"


@require_GET
@project_member_required()
def job_metrics_download(request, project_id, job_id, fmt):
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    if fmt not in ("csv", "json"):
        raise Http404("Download metrics as csv or json.")
    rows = _csv_rows(job.pk) if fmt == "csv" else _json_rows(job.pk)
    response = StreamingHttpResponse(rows, content_type="text/csv" if fmt == "csv" else "application/json")
    response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-metrics.{fmt}"'
    return response


@require_POST
@project_member_required(manager=True)
def job_cancel(request, project_id, job_id):
    job = training_job_cancel(job=job_for_user(user=request.user, job_id=job_id, project_id=project_id))
    messages.info(request, f"Job {job.pk}: {'cancelled' if job.finished else 'cancel requested'}.")
    return redirect("job-detail", project_id=project_id, job_id=job.pk)


UNCONFIRMED = "Tick the box to confirm the deletion; nothing was deleted."


def _storage_action(request, job, action):
    """``(None, action())`` once the form confirms the deletion; else ``(the job page with the reason, a
    4xx, None)``: 400 unconfirmed, 409 when the service refuses (running, or still in use)."""
    message, status = UNCONFIRMED, 400
    if request.POST.get("confirm") == "yes":
        try:
            return None, action()
        except ValidationError as exc:
            message, status = " ".join(exc.messages), 409
    context = {**_detail_context(request, job), "storage_error": message}
    return render(request, "training/job_detail.html", context, status=status), None


@require_POST
@project_member_required(manager=True)
def job_artifacts_remove(request, project_id, job_id):
    """Delete a finished job's checkpoints (``include_model``: its final model and registry entry too)."""
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    include_model = request.POST.get("include_model") == "yes"
    refused, freed = _storage_action(
        request, job, lambda: job_artifacts_delete(job=job, include_model=include_model)
    )
    if refused is not None:
        return refused
    messages.info(request, f"Job {job.pk}: checkpoints deleted, {filesizeformat(freed)} freed.")
    return redirect("job-detail", project_id=project_id, job_id=job.pk)


@require_POST
@project_member_required(manager=True)
def job_remove(request, project_id, job_id):
    """Delete a finished job: its row, its registered model and its folder."""
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    refused, _ = _storage_action(request, job, lambda: job_delete(job=job))
    if refused is not None:
        return refused
    messages.info(request, f"Job {job_id} and its files deleted.")
    return redirect("job-list", project_id=project_id)


@require_GET
@project_member_required()
def job_artifact(request, project_id, job_id, artifact_id):
    """Download a file artifact, or a folder artifact as a zip written on the fly."""
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    artifact = Artifact.objects.filter(job=job, pk=artifact_id).first()
    if artifact is None:
        raise Http404("No such artifact.")
    path = artifact_path(artifact)
    if path.is_file():
        return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
    if not path.is_dir():
        raise Http404("The artifact's files are gone.")
    spooled = io.BytesIO() if artifact.size < 64 * 1024 * 1024 else _tempfile()
    with zipfile.ZipFile(spooled, "w", zipfile.ZIP_STORED) as archive:
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            archive.write(child, f"{path.name}/{child.relative_to(path).as_posix()}")
    spooled.seek(0)
    return FileResponse(spooled, as_attachment=True, filename=f"job-{job.pk}-{path.name}.zip")


def _tempfile():
    import tempfile

    return tempfile.TemporaryFile()
