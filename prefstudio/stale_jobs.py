"""Requeue the jobs of every kind whose worker died: training runs (resumed from their checkpoint),
generations (resumed per item), freezes and imports (run again; nothing of theirs had committed).

Celery beat runs each app's check when a deployment runs beat; every worker also runs this on a thread
(``training/tasks.py``), so deployments without a beat process (``make run``, docker-compose) recover too.
"""


def requeue_stale_jobs() -> dict[str, list[int]]:
    """The ids requeued, by kind of job."""
    from annotation.services.job_recovery import annotation_jobs_requeue_stale
    from training.services.jobs import training_job_requeue_stale

    return {"training": training_job_requeue_stale(), **annotation_jobs_requeue_stale()}
