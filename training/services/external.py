"""Jobs run outside the studio's workers (queue ``slurm``): the engine reports to the job over the API.

A job on the ``slurm`` queue is never sent to Celery; the job page offers its ``sbatch`` script
(``slurm.py``), whose engine (``--report-to``, ``training/engine/reporting.py``) takes the queued job as an
attempt, reports metrics, folders and its outcome here, and hears a cancel in the replies.  Each report
renews the attempt's lease, so a run that goes quiet is requeued by the job core's recovery like a lost
worker's (the script resumes from the last checkpoint when sent again).  Folders are named by the run
(``checkpoint-N``, ``samples/step-N``, ``final``) and looked up in the job's own output folder: no path
from the request reaches the file system.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from jobs.leases import Lease, job_claim
from jobs.models import JobState
from training.engine.runtime.checkpoint import latest_checkpoint

from ..models import Queue, TrainingJob
from .artifacts import Digests, artifact_record, artifacts_record
from .attempt import LeaseLostError
from .joblog import JobLog
from .jobs import TRAINING_JOBS
from .metrics import metrics_write_batch
from .runner import training_job_succeed

FOLDER_NAME = re.compile(r"checkpoint-\d{1,9}|samples/step-\d{1,9}|final")
OUTCOMES = {"succeeded": JobState.SUCCEEDED, "failed": JobState.FAILED, "cancelled": JobState.CANCELLED}
MAX_POINTS = 100_000
EVALUATION_QUEUE = Queue.CPU


class ReportRefused(Exception):
    """A report the job cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Report:
    attempt: int | None
    points: list[dict]
    saved: list[str]
    outcome: str | None = None
    step: int | None = None
    error: str = ""


def external_report(*, job: TrainingJob, report: Report) -> dict:
    """Take one report of an outside run; the reply tells it its attempt and whether to stop."""
    if job.queue != Queue.SLURM:
        raise ReportRefused(f"job {job.pk} runs on the {job.queue} queue: its worker reports it", 409)
    if report.attempt is None:
        lease = job_claim(TrainingJob, pk=job.pk, waiting=TRAINING_JOBS.waiting)
        if lease is None:
            raise ReportRefused(f"job {job.pk} is {job.state}, not queued: nothing to run", 409)
        TrainingJob.objects.filter(pk=job.pk).update(worker_host="slurm")
        JobLog.for_job(job).write(f"attempt {lease.attempt}: a run outside the studio (Slurm) took the job")
        return {"attempt": lease.attempt, "cancel": False}
    lease = Lease(TrainingJob, job.pk, report.attempt)
    points = _points(report.points)
    folders = [folder for name in report.saved if (folder := _folder(job, name)) is not None]
    with transaction.atomic():
        steps = [step for step, *_ in points]
        if not lease.write(**({"step": max(steps)} if steps else {})):
            raise ReportRefused(f"job {job.pk}: attempt {report.attempt} no longer owns the job", 409)
        metrics_write_batch(job_id=job.pk, points=points)
        JobLog.for_job(job).write_points(points)
        for folder in folders:
            artifact_record(job=job, path=folder, digests=Digests())
        if report.outcome is not None:
            _finish(job, lease, report)
    cancel = TrainingJob.objects.filter(pk=job.pk, cancel_requested=True).exists()
    return {"attempt": report.attempt, "cancel": cancel}


def _points(rows: list[dict]) -> list[tuple[int, str, float, float]]:
    if len(rows) > MAX_POINTS:
        raise ReportRefused(f"points: at most {MAX_POINTS:,} rows per report")
    wall, points = time.time(), []
    for i, row in enumerate(rows):
        step = row.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= 10_000_000:
            raise ReportRefused(f"points[{i}].step: a whole number of steps, got {step!r}")
        for name, value in row.items():
            if name == "step":
                continue
            if isinstance(value, str) and value in ("nan", "inf", "-inf"):
                value = math.nan
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < len(name) <= 80:
                raise ReportRefused(f"points[{i}].{str(name)[:80]}: a number, got {str(value)[:40]!r}")
            points.append((step, name, float(value), wall))
    return points


def _folder(job: TrainingJob, name: str) -> Path | None:
    """The reported folder in the job's output folder; None for a checkpoint the run has already deleted
    (``keep_checkpoints``: a later one is in place)."""
    if not isinstance(name, str) or not FOLDER_NAME.fullmatch(name):
        raise ReportRefused(f"saved: {str(name)[:80]!r} is not checkpoint-N, samples/step-N or final")
    folder = Path(job.config["output_dir"]) / name
    if not folder.is_dir():
        if _pruned(folder):
            return None
        raise ReportRefused(
            f"saved: {name} is not in the job's output folder here; a run outside the studio must write to "
            "storage the studio shares (TRAINING_SHARED_STORAGE)"
        )
    return folder


def _pruned(folder: Path) -> bool:
    """A ``checkpoint-N`` gone while a later complete checkpoint is in place: the run deleted it."""
    latest = latest_checkpoint(folder.parent) if folder.name.startswith("checkpoint-") else None
    return latest is not None and int(latest.name.split("-")[1]) > int(folder.name.split("-")[1])


def _finish(job: TrainingJob, lease: Lease, report: Report) -> None:
    state = OUTCOMES.get(report.outcome or "")
    if state is None:
        raise ReportRefused(f"outcome: succeeded, failed or cancelled, not {str(report.outcome)[:40]!r}")
    from ..tasks import training_evaluate

    job.refresh_from_db()
    log = JobLog.for_job(job)
    if state == JobState.SUCCEEDED:
        step = report.step if report.step is not None else job.step
        final = Path(job.config["output_dir"]) / "final"
        folder = final if final.is_dir() else None
        try:
            training_job_succeed(
                job, lease, step=step, folder=folder, digests=Digests(), log=log, where=" (Slurm)"
            )
        except LeaseLostError as exc:
            raise ReportRefused(str(exc), 409) from exc
        if folder is not None:  # the report loads models: a worker writes it, not this request
            send = lambda: training_evaluate.apply_async(args=[job.pk], queue=EVALUATION_QUEUE)  # noqa: E731
            transaction.on_commit(send)
            log.write(f"evaluation report queued on the {EVALUATION_QUEUE} queue")
        return
    fields = {"error": report.error[:10000]} if state == JobState.FAILED else {}
    if report.step is not None and state != JobState.FAILED:
        fields["step"] = report.step
    artifacts_record(job=job)
    lease.finish(state, **fields)
    log.write(f"{state} (Slurm){': ' + report.error if report.error else ''}")
