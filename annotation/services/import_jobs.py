"""Web imports: an ImportJob holds the uploaded file, its preview, progress and the final report.

Stages (in ``ImportJob.report["stage"]``, the state stays QUEUED until a worker claims the job):
``preview`` (uploaded, waiting for the manager to confirm) → ``queued`` (its task was sent) →
``validating`` → ``writing`` → ``done`` (SUCCEEDED or FAILED).
"""

import logging
import traceback
import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.leases import Lease, LeaseLost, job_claim
from jobs.models import JobState
from jobs.recovery import JobKind, seconds_setting, setting
from jobs.sending import job_send_on_commit

from ..importers import FileFormatError
from ..models import ImportJob, Project
from .imports import ImportOutcome, preferences_import, preferences_preview

logger = logging.getLogger(__name__)
PROGRESS_EVERY = 1000
ALLOWED_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet", ".zip")


def import_job_create(*, project: Project, user, upload) -> ImportJob:
    """Store the upload and its preview; raises FileFormatError (and keeps nothing) when unreadable."""
    extension = Path(upload.name).suffix.lower()
    if extension not in ALLOWED_EXTENSIONS:
        raise FileFormatError(
            f"Unsupported file type {extension or '(none)'!r}: use {', '.join(ALLOWED_EXTENSIONS)}."
        )
    job = ImportJob(project=project, created_by=user, original_name=Path(upload.name).name[:300])
    job.file.save(f"{uuid.uuid4().hex}{extension}", upload, save=False)
    try:
        preview = preferences_preview(project=project, path=Path(job.file.path))
    except Exception as exc:
        job.file.delete(save=False)
        if isinstance(exc, FileFormatError):
            raise
        logger.exception("preview of %s failed", upload.name)
        raise FileFormatError(f"Cannot read this file ({type(exc).__name__}: {exc}).") from exc
    job.detected_format = preview.pop("format_code")[:40]
    job.rows_total = preview["rows_total"]
    job.report = {**preview, "stage": "preview"}
    job.save()
    return job


def import_job_run_inline(*, project: Project, user, upload) -> tuple[ImportJob, ImportOutcome]:
    """Import an upload within the caller's request (the API's import) and keep what a web import keeps:
    the stored file, the detected format and the report, listed with the project's imports.  An unreadable
    file raises FileFormatError and keeps nothing, as the web preview does."""
    extension = Path(upload.name).suffix.lower()
    job = ImportJob(
        project=project,
        created_by=user,
        original_name=Path(upload.name).name[:300],
        state=JobState.RUNNING,
        report={"stage": "validating"},
        started_at=timezone.now(),
    )
    job.file.save(f"{uuid.uuid4().hex}{extension}", upload, save=False)
    job.save()
    try:
        outcome = preferences_import(project=project, path=Path(job.file.path), source_name=job.original_name)
    except Exception:
        job.file.delete(save=False)
        job.delete()
        raise
    job.report = {**outcome.report(), "stage": "done"}
    job.state = JobState.SUCCEEDED if outcome.ok else JobState.FAILED
    job.detected_format = (job.report["format"] or "")[:40]
    job.rows_total = job.rows_done = job.report["rows_total"]
    job.finished_at = timezone.now()
    job.save(update_fields=["report", "state", "detected_format", "rows_total", "rows_done", "finished_at"])
    return job, outcome


def import_job_confirm(*, job: ImportJob) -> bool:
    """Queue a previewed job (once); the worker task is sent after the transaction commits."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job.pk)
        if job.state != JobState.QUEUED or job.report.get("stage") != "preview":
            return False
        job.report = {**job.report, "stage": "queued"}
        job.heartbeat_at = timezone.now()  # when the task was sent (the stale check resends a lost one)
        job.save(update_fields=["report", "heartbeat_at"])
        job_send_on_commit(IMPORT_JOBS, job.pk)
    return True


def import_job_run(*, import_id: int) -> None:
    """Claim a confirmed job (a duplicate delivery does nothing), import it and store the report.  Progress
    reports renew this attempt's lease; the rows and the job's SUCCEEDED commit together, and only while
    this attempt still owns the job, so an attempt that was taken over (requeued after its worker went
    quiet) writes nothing, and a requeued job never imports its rows twice."""
    lease = job_claim(ImportJob, pk=import_id, waiting=Q(report__stage="queued"), rows_done=0)
    if lease is None:
        return
    job = ImportJob.objects.select_related("project").get(pk=import_id)
    base = {key: job.report.get(key) for key in ("format", "format_label", "rows_total", "preview")}
    try:
        lease.renew(report={**base, "stage": "validating"})
        with lease.heartbeat(settings.ANNOTATION_JOB_HEARTBEAT_SECONDS):
            outcome = preferences_import(
                project=job.project,
                path=Path(job.file.path),
                forced_format=job.report.get("format"),
                source_name=job.original_name,
                progress=_validation_progress(lease),
                write_progress=_write_stage(lease, base),
                before_commit=lambda outcome: _succeed(lease, outcome),
            )
    except LeaseLost:
        logger.warning("import %s: attempt %s was taken over; it wrote nothing", import_id, lease.attempt)
        return
    except FileFormatError as exc:
        lease.finish(JobState.FAILED, report={**base, "stage": "done", "errors": []}, error=str(exc))
        return
    except Exception as exc:
        logger.exception("import %s crashed", import_id)
        error = f"The import stopped on an internal error ({type(exc).__name__}); nothing was imported."
        report = {**base, "stage": "done", "errors": []}
        lease.finish(JobState.FAILED, report=report, error=error, traceback=traceback.format_exc())
        return
    if not outcome.ok:  # row errors: nothing was written
        lease.finish(JobState.FAILED, report={**outcome.report(), "stage": "done"}, error="")


def _succeed(lease: Lease, outcome: ImportOutcome) -> None:
    """Mark the import done inside the rows' transaction; a lost lease rolls the rows back."""
    if not lease.finish(JobState.SUCCEEDED, report={**outcome.report(), "stage": "done"}, error=""):
        raise LeaseLost(f"import {lease.pk}: attempt {lease.attempt} no longer owns the job")


def _send(import_id: int) -> None:
    from ..tasks import import_run

    import_run.delay(import_id)


IMPORT_JOBS = JobKind(
    name="import",
    model=ImportJob,
    enqueue=_send,
    stale_after=seconds_setting("ANNOTATION_JOB_STALE_SECONDS"),
    max_attempts=setting("ANNOTATION_JOB_MAX_ATTEMPTS"),
    requeue=lambda job: {"report": {**job.report, "stage": "queued"}, "rows_done": 0},
    fail=lambda job: {
        "report": {**job.report, "stage": "done", "errors": []},
        "error": f"The worker stopped reporting {job.attempts} times; nothing was imported: start again.",
    },
    waiting=Q(report__stage="queued"),
)
"""Imports whose worker died are run again (their rows never committed); a previewed import awaiting
confirmation has no task out and is left alone."""


def _validation_progress(lease: Lease):
    last = {"done": -PROGRESS_EVERY}

    def progress(done: int, total: int) -> None:
        if done - last["done"] >= PROGRESS_EVERY or done == total:
            last["done"] = done
            lease.renew(rows_done=done, rows_total=total)

    return progress


def _write_stage(lease: Lease, base: dict):
    def progress(done: int, total: int) -> None:
        if done == 0:  # later calls run inside the write transaction: nobody could read them yet
            lease.renew(rows_done=total, report={**base, "stage": "writing"})

    return progress
