"""Web freezes: a FreezeJob holds the rule, the worker's stage and, once done, the version or the error.

The page queues the job and polls it; the worker claims it (a duplicate delivery does nothing), reports
its stage (``loading`` votes → ``aggregating`` tasks → ``writing`` examples) and stores the outcome.
"""

import logging
from dataclasses import asdict

from django.db import transaction
from django.utils import timezone

from ..models import FreezeJob, FreezeStatus, Project
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
    """Claim a pending job, freeze the version it asks for and store the version or the reason it failed."""
    claimed = FreezeJob.objects.filter(pk=job_id, status=FreezeStatus.PENDING).update(
        status=FreezeStatus.RUNNING
    )
    if not claimed:
        return
    job = FreezeJob.objects.select_related("project", "created_by").get(pk=job_id)

    def on_stage(stage: str, count: int) -> None:
        FreezeJob.objects.filter(pk=job_id).update(stage=stage, stage_count=count)

    try:
        version = dataset_version_freeze(
            project=job.project,
            rule=FreezeRule(**job.rule),
            seed=job.seed,
            test_fraction=job.test_fraction,
            created_by=job.created_by,
            on_stage=on_stage,
        )
    except (FreezeError, ValueError) as exc:
        _finish(job_id, status=FreezeStatus.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("freeze job %s failed", job_id)
        _finish(job_id, status=FreezeStatus.FAILED, error=f"The freeze failed ({type(exc).__name__}: {exc}).")
    else:
        _finish(job_id, status=FreezeStatus.SUCCEEDED, version=version)


def _finish(job_id: int, **fields) -> None:
    FreezeJob.objects.filter(pk=job_id).update(stage="done", finished_at=timezone.now(), **fields)
