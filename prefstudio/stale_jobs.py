"""Requeue the jobs of every kind whose worker died: training runs (resumed from their checkpoint),
generations (resumed per item), freezes and imports (run again; nothing of theirs had committed).

Celery beat runs each app's check when a deployment runs beat; every worker also runs this on a thread
(``training/tasks.py``), so deployments without a beat process (``make run``, docker-compose) recover too.
"""

import logging

logger = logging.getLogger(__name__)


def requeue_stale_jobs() -> dict[str, list[int]]:
    """The ids requeued, by kind of job (a kind whose check failed is logged and reported empty)."""
    from annotation.services.job_recovery import annotation_jobs_requeue_stale
    from training.services.jobs import training_job_requeue_stale

    try:
        training = training_job_requeue_stale()
    except Exception:  # noqa: BLE001 - the annotation app's recovery must still run
        logger.exception("stale training job check failed")
        training = []
    return {"training": training, **annotation_jobs_requeue_stale()}
