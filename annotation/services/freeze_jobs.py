"""Web freezes: a FreezeJob holds the rule, the worker's stage and, once done, the version or the error.

The page queues the job and polls it; the worker claims it (a duplicate delivery does nothing), reports
its stage (``loading`` votes → ``aggregating`` tasks → ``writing`` examples) and stores the outcome.  A
freeze whose worker died is queued again by ``freeze_jobs_requeue_stale`` (``leases`` explains how).
"""

import logging
from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ..models import FreezeJob, FreezeStatus, Project
from .leases import LeaseLost, heartbeat, lease_renew, lost_resend, stale_requeue
from .versions import FreezeError, FreezeRule, dataset_version_freeze

logger = logging.getLogger(__name__)


def freeze_job_create(
    *, project: Project, user, rule: FreezeRule, seed: int, test_fraction: float
) -> FreezeJob:
    """Queue a freeze; the worker task is sent once the job row is committed."""
    from ..tasks import freeze_run

    with transaction.atomic():
        job = FreezeJob.objects.create(
            project=project, created_by=user, rule=asdict(rule), seed=seed, test_fraction=test_fraction
        )
        transaction.on_commit(lambda: freeze_run.delay(job.pk))
    return job


def freeze_job_run(*, job_id: int) -> None:
    """Claim a pending job, freeze the version it asks for and store the version or the reason it failed.

    The version and the job's SUCCEEDED commit together, and only while this attempt still owns the job:
    an attempt that was taken over (its worker went quiet and the job was requeued) writes nothing."""
    claimed = FreezeJob.objects.filter(pk=job_id, status=FreezeStatus.PENDING).update(
        status=FreezeStatus.RUNNING, attempts=F("attempts") + 1, heartbeat_at=timezone.now()
    )
    if not claimed:
        return
    job = FreezeJob.objects.select_related("project", "created_by").get(pk=job_id)
    mine = FreezeJob.objects.filter(pk=job_id, status=FreezeStatus.RUNNING, attempts=job.attempts)

    def on_written(version) -> None:
        lease_renew(
            mine, status=FreezeStatus.SUCCEEDED, version=version, stage="done", finished_at=timezone.now()
        )

    try:
        with heartbeat(mine, settings.ANNOTATION_JOB_HEARTBEAT_SECONDS):
            dataset_version_freeze(
                project=job.project,
                rule=FreezeRule(**job.rule),
                seed=job.seed,
                test_fraction=job.test_fraction,
                created_by=job.created_by,
                on_stage=lambda stage, count: lease_renew(mine, stage=stage, stage_count=count),
                on_written=on_written,
            )
    except LeaseLost:
        logger.warning("freeze job %s: attempt %s was taken over; it wrote nothing", job_id, job.attempts)
    except (FreezeError, ValueError) as exc:
        _fail(mine, str(exc))
    except Exception as exc:
        logger.exception("freeze job %s failed", job_id)
        _fail(mine, f"The freeze failed ({type(exc).__name__}: {exc}).")


def freeze_jobs_requeue_stale(*, stale_after: timedelta, max_attempts: int = 3) -> list[int]:
    """Queue again the freezes whose worker stopped reporting (nothing of theirs was written: a version
    commits in one transaction with its job), or fail those that had ``max_attempts`` attempts; send the
    task again for freezes that waited for a worker past ``stale_after``.  Returns the requeued ids."""
    from ..tasks import freeze_run

    lost_resend(
        FreezeJob, waiting=Q(status=FreezeStatus.PENDING), stale_after=stale_after, enqueue=freeze_run.delay
    )
    return stale_requeue(
        FreezeJob,
        running=FreezeStatus.RUNNING,
        stale_after=stale_after,
        max_attempts=max_attempts,
        requeue={"status": FreezeStatus.PENDING, "stage": "", "stage_count": 0},
        fail={
            "status": FreezeStatus.FAILED,
            "stage": "done",
            "error": f"The worker stopped reporting {max_attempts} times; nothing was frozen: start again.",
        },
        enqueue=freeze_run.delay,
    )


def _fail(mine, error: str) -> None:
    mine.update(status=FreezeStatus.FAILED, stage="done", error=error, finished_at=timezone.now())
