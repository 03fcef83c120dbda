"""Web import: upload → preview (detected format, first rows) → confirm → progress → report."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.models import JobState
from jobs.pages import job_page
from prefstudio.uploads import upload_limit_message, upload_was_cut_off

from ..access import project_member_required
from ..importers import FileFormatError
from ..models import ImportJob
from ..services.import_jobs import ALLOWED_EXTENSIONS, import_job_confirm, import_job_create


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        help_text=f"{', '.join(ALLOWED_EXTENSIONS)}; images go in a .zip next to the data file."
    )

    def __init__(self, *args, cut_off: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if cut_off:  # the upload handler stopped the file at the limit: say so instead of "required"
            self.fields["file"].error_messages["required"] = upload_limit_message()

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith(ALLOWED_EXTENSIONS):
            raise forms.ValidationError(
                f"Unsupported file type: upload one of {', '.join(ALLOWED_EXTENSIONS)}."
            )
        return upload


@require_http_methods(["GET", "POST"])
@project_member_required(manager=True)
def import_upload(request, project_id):
    posted = request.method == "POST"
    data, files = (
        (request.POST, request.FILES) if posted else (None, None)
    )  # parsed here, so cut_off is known
    form = ImportUploadForm(data, files, cut_off=upload_was_cut_off(request))
    if posted and form.is_valid():
        try:
            job = import_job_create(
                project=request.project, user=request.user, upload=form.cleaned_data["file"]
            )
        except FileFormatError as exc:
            form.add_error("file", str(exc))
        else:
            return redirect("import-detail", project_id=project_id, import_id=job.pk)
    status = 400 if form.errors else 200
    context = {"project": request.project, "form": form, "max_bytes": settings.UPLOAD_MAX_BYTES}
    return render(request, "annotation/import_upload.html", context, status=status)


def _context(project, job: ImportJob) -> dict:
    report = job.report or {}
    stage = report.get("stage", "")
    total = job.rows_total or 0
    return {
        "project": project,
        "job": job,
        "report": report,
        "stage": stage,
        "finished": job.finished,
        "awaiting_confirmation": job.state == JobState.QUEUED and stage == "preview",
        "percent": round(100 * min(job.rows_done, total) / total) if total else 0,
        "errors": report.get("errors", []),
    }


@require_GET
@project_member_required(manager=True)
def import_detail(request, project_id, import_id):
    job = get_object_or_404(ImportJob, pk=import_id, project=request.project)
    context = _context(request.project, job)
    return job_page(
        request, "annotation/import_detail.html", "import-progress", context, finished=context["finished"]
    )


@require_POST
@project_member_required(manager=True)
def import_confirm(request, project_id, import_id):
    job = get_object_or_404(ImportJob, pk=import_id, project=request.project)
    if not import_job_confirm(job=job):
        messages.info(request, "This import was already confirmed.")
    return redirect("import-detail", project_id=project_id, import_id=job.pk)
