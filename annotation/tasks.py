"""Celery entry points for the annotation app: they only adapt and call services."""

from celery import shared_task

from .services.import_jobs import import_job_run


@shared_task(name="annotation.tasks.import_run", acks_late=False)
def import_run(import_id: int) -> None:
    """Run a confirmed web import (claims the job first, so a duplicate delivery does nothing)."""
    import_job_run(import_id=import_id)


@shared_task(name="annotation.tasks.freeze_run", acks_late=False)
def freeze_run(job_id: int) -> None:
    """Freeze the dataset version a web freeze job asks for (claims it first: a duplicate does nothing)."""
    from .services.freeze_jobs import freeze_job_run

    freeze_job_run(job_id=job_id)
