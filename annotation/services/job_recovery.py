"""Requeue the annotation app's worker jobs (generation, freeze, import) whose worker stopped reporting."""

import logging
from datetime import timedelta

from django.conf import settings

from .freeze_jobs import freeze_jobs_requeue_stale
from .generation import generation_jobs_requeue_stale
from .import_jobs import import_jobs_requeue_stale

logger = logging.getLogger(__name__)
CHECKS = {
    "generation": generation_jobs_requeue_stale,
    "freeze": freeze_jobs_requeue_stale,
    "import": import_jobs_requeue_stale,
}


def annotation_jobs_requeue_stale() -> dict[str, list[int]]:
    """The ids requeued, by kind of job; stale means silent for ANNOTATION_JOB_STALE_SECONDS.  A kind
    whose check fails (a database hiccup) is logged and skipped; the others still run."""
    stale_after = timedelta(seconds=settings.ANNOTATION_JOB_STALE_SECONDS)
    requeued = {}
    for kind, check in CHECKS.items():
        try:
            requeued[kind] = check(stale_after=stale_after)
        except Exception:  # noqa: BLE001 - one kind's failure must not stop the others' recovery
            logger.exception("stale %s job check failed", kind)
            requeued[kind] = []
    return requeued
