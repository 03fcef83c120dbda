"""Web imports: an ImportJob holds the uploaded file, its preview, progress and the final report.

Stages (in ``ImportJob.report["stage"]``, status stays PENDING until a worker claims the job):
``preview`` (uploaded, waiting for the manager to confirm) → ``queued`` → ``validating`` → ``writing``
→ ``done`` (status SUCCEEDED or FAILED).
"""

import logging
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ..importers import FileFormatError
from ..models import ImportJob, ImportStatus, Project
from .imports import ImportOutcome, preferences_import, preferences_preview
from .leases import LeaseLost, heartbeat, lease_renew, lost_resend, stale_requeue

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
        status=ImportStatus.RUNNING,
        report={"stage": "validating"},
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
    job.status = ImportStatus.SUCCEEDED if outcome.ok else ImportStatus.FAILED
    job.detected_format = (job.report["format"] or "")[:40]
    job.rows_total = job.rows_done = job.report["rows_total"]
    job.finished_at = timezone.now()
    job.save(update_fields=["report", "status", "detected_format", "rows_total", "rows_done", "finished_at"])
    return job, outcome


def import_job_confirm(*, job: ImportJob) -> bool:
    """Queue a previewed job (once); the worker task is sent after the transaction commits."""
    from ..tasks import import_run

    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job.pk)
        if job.status != ImportStatus.PENDING or job.report.get("stage") != "preview":
            return False
        job.report = {**job.report, "stage": "queued"}
        job.heartbeat_at = timezone.now()  # when the task was sent (the stale check resends a lost one)
        job.save(update_fields=["report", "heartbeat_at"])
        transaction.on_commit(lambda: import_run.delay(job.pk))
    return True


def import_job_run(*, import_id: int) -> None:
    """Claim a queued job (a duplicate delivery does nothing), import it and store the report.  Progress
    reports renew this attempt's lease; the rows and the job's SUCCEEDED commit together, and only while
    this attempt still owns the job, so an attempt that was taken over (requeued after its worker went
    quiet) writes nothing, and a requeued job never imports its rows twice."""
    claimed = ImportJob.objects.filter(
        pk=import_id, status=ImportStatus.PENDING, report__stage="queued"
    ).update(
        status=ImportStatus.RUNNING, rows_done=0, attempts=F("attempts") + 1, heartbeat_at=timezone.now()
    )
    if not claimed:
        return
    job = ImportJob.objects.select_related("project").get(pk=import_id)
    mine = ImportJob.objects.filter(pk=import_id, status=ImportStatus.RUNNING, attempts=job.attempts)
    base = {key: job.report.get(key) for key in ("format", "format_label", "rows_total", "preview")}
    try:
        lease_renew(mine, report={**base, "stage": "validating"})
        with heartbeat(mine, settings.ANNOTATION_JOB_HEARTBEAT_SECONDS):
            outcome = preferences_import(
                project=job.project,
                path=Path(job.file.path),
                forced_format=job.report.get("format"),
                source_name=job.original_name,
                progress=_validation_progress(mine),
                write_progress=_write_stage(mine, base),
                before_commit=lambda outcome: lease_renew(
                    mine,
                    status=ImportStatus.SUCCEEDED,
                    report={**outcome.report(), "stage": "done"},
                    error="",
                    finished_at=timezone.now(),
                ),
            )
    except LeaseLost:
        logger.warning("import %s: attempt %s was taken over; it wrote nothing", import_id, job.attempts)
        return
    except FileFormatError as exc:
        _finish(mine, ImportStatus.FAILED, report={**base, "stage": "done", "errors": []}, error=str(exc))
        return
    except Exception as exc:
        logger.exception("import %s crashed", import_id)
        error = f"The import stopped on an internal error ({type(exc).__name__}); nothing was imported."
        _finish(mine, ImportStatus.FAILED, report={**base, "stage": "done", "errors": []}, error=error)
        return
    if not outcome.ok:  # row errors: nothing was written
        _finish(mine, ImportStatus.FAILED, report={**outcome.report(), "stage": "done"}, error="")


def import_jobs_requeue_stale(*, stale_after: timedelta, max_attempts: int = 3) -> list[int]:
    """Queue again the imports whose worker stopped reporting (their rows never committed), or fail
    those that had ``max_attempts`` attempts; send the task again for confirmed imports that waited for
    a worker past ``stale_after``.  Returns the requeued ids."""
    from ..tasks import import_run

    waiting = Q(status=ImportStatus.PENDING, report__stage="queued")
    lost_resend(ImportJob, waiting=waiting, stale_after=stale_after, enqueue=import_run.delay)
    return stale_requeue(
        ImportJob,
        running=ImportStatus.RUNNING,
        stale_after=stale_after,
        max_attempts=max_attempts,
        requeue=_requeued_fields,
        fail=lambda pk: {
            "status": ImportStatus.FAILED,
            "report": {**_report(pk), "stage": "done", "errors": []},
            "error": f"The worker stopped reporting {max_attempts} times; nothing was imported: start again.",
        },
        enqueue=import_run.delay,
    )


def _report(import_id: int) -> dict:
    return ImportJob.objects.values_list("report", flat=True).get(pk=import_id)


def _requeued_fields(import_id: int) -> dict:
    return {
        "status": ImportStatus.PENDING,
        "report": {**_report(import_id), "stage": "queued"},
        "rows_done": 0,
    }


def _validation_progress(mine):
    last = {"done": -PROGRESS_EVERY}

    def progress(done: int, total: int) -> None:
        if done - last["done"] >= PROGRESS_EVERY or done == total:
            last["done"] = done
            lease_renew(mine, rows_done=done, rows_total=total)

    return progress


def _write_stage(mine, base: dict):
    def progress(done: int, total: int) -> None:
        if done == 0:  # later calls run inside the write transaction: nobody could read them yet
            lease_renew(mine, rows_done=total, report={**base, "stage": "writing"})

    return progress


def _finish(mine, status: str, *, report: dict, error: str) -> None:
    """Record how the attempt ended (nothing, once another attempt owns the job)."""
    mine.update(status=status, report=report, error=error, finished_at=timezone.now())
