"""Web freezes: a FreezeJob holds the rule, the worker's stage and, once done, the version or the error.

The page queues the job and polls it; the worker claims it (a duplicate delivery does nothing), reports
its stage (``loading`` votes → ``aggregating`` tasks → ``writing`` examples) and stores the outcome.  A
freeze whose worker died is queued again by the job core's recovery (``FREEZE_JOBS``; ``jobs.leases``
explains how).
"""

import logging
import traceback
from dataclasses import asdict

from django.conf import settings
from django.db import transaction

from jobs.leases import LeaseLost, job_claim
from jobs.models import JobState
from jobs.recovery import JobKind, seconds_setting, setting
from jobs.sending import job_send_on_commit

from ..models import FreezeJob, Project
from .versions import FreezeError, FreezeRule, dataset_version_freeze

logger = logging.getLogger(__name__)


def freeze_job_create(
    *, project: Project, user, rule: FreezeRule, seed: int, test_fraction: float
) -> FreezeJob:
    """Queue a freeze; the worker task is sent once the job row is committed.  The same freeze asked again
    while one is still queued (a user retrying while the broker is down) returns that job."""
    wanted = {"rule": asdict(rule), "seed": seed, "test_fraction": test_fraction}
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        for job in FreezeJob.objects.filter(project=project, state=JobState.QUEUED):
            if {"rule": job.rule, "seed": job.seed, "test_fraction": job.test_fraction} == wanted:
                return job
        job = FreezeJob.objects.create(project=project, created_by=user, **wanted)
        job_send_on_commit(FREEZE_JOBS, job.pk)
    return job


def freeze_job_run(*, job_id: int) -> None:
    """Claim a queued job, freeze the version it asks for and store the version or the reason it failed.

    The version and the job's SUCCEEDED commit together, and only while this attempt still owns the job:
    an attempt that was taken over (its worker went quiet and the job was requeued) writes nothing."""
    lease = job_claim(FreezeJob, pk=job_id)
    if lease is None:
        return
    job = FreezeJob.objects.select_related("project", "created_by").get(pk=job_id)

    def on_written(version) -> None:
        if not lease.finish(JobState.SUCCEEDED, version=version, stage="done"):
            raise LeaseLost(f"freeze job {job_id}: attempt {lease.attempt} no longer owns the job")

    try:
        with lease.heartbeat(settings.ANNOTATION_JOB_HEARTBEAT_SECONDS):
            dataset_version_freeze(
                project=job.project,
                rule=FreezeRule(**job.rule),
                seed=job.seed,
                test_fraction=job.test_fraction,
                created_by=job.created_by,
                on_stage=lambda stage, count: lease.renew(stage=stage, stage_count=count),
                on_written=on_written,
            )
    except LeaseLost:
        logger.warning("freeze job %s: attempt %s was taken over; it wrote nothing", job_id, lease.attempt)
    except (FreezeError, ValueError) as exc:
        lease.finish(JobState.FAILED, stage="done", error=str(exc))
    except Exception as exc:
        logger.exception("freeze job %s failed", job_id)
        error = f"The freeze failed ({type(exc).__name__}: {exc})."
        lease.finish(JobState.FAILED, stage="done", error=error, traceback=traceback.format_exc())


def _send(job_id: int) -> None:
    from ..tasks import freeze_run

    freeze_run.delay(job_id)


FREEZE_JOBS = JobKind(
    name="freeze",
    model=FreezeJob,
    enqueue=_send,
    stale_after=seconds_setting("ANNOTATION_JOB_STALE_SECONDS"),
    max_attempts=setting("ANNOTATION_JOB_MAX_ATTEMPTS"),
    requeue={"stage": "", "stage_count": 0},
    fail=lambda job: {
        "stage": "done",
        "error": f"The worker stopped reporting {job.attempts} times; nothing was frozen: start again.",
    },
)
"""Freezes whose worker died are run again (nothing of theirs was written: a version commits in one
transaction with its job)."""
