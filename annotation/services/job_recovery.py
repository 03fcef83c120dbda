"""Requeue the annotation app's worker jobs (generation, freeze, import) whose worker stopped reporting."""

from datetime import timedelta

from django.conf import settings

from .freeze_jobs import freeze_jobs_requeue_stale
from .generation import generation_jobs_requeue_stale
from .import_jobs import import_jobs_requeue_stale


def annotation_jobs_requeue_stale() -> dict[str, list[int]]:
    """The ids requeued, by kind of job; stale means silent for ANNOTATION_JOB_STALE_SECONDS."""
    stale_after = timedelta(seconds=settings.ANNOTATION_JOB_STALE_SECONDS)
    return {
        "generation": generation_jobs_requeue_stale(stale_after=stale_after),
        "freeze": freeze_jobs_requeue_stale(stale_after=stale_after),
        "import": import_jobs_requeue_stale(stale_after=stale_after),
    }
