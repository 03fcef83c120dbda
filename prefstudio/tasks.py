"""The job core's periodic recovery as a Celery task, and the same check on a thread in every worker."""

import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)
_stop_checks = threading.Event()


@shared_task(name="prefstudio.tasks.jobs_recover", acks_late=False, ignore_result=True)
def jobs_recover() -> dict[str, list[int]]:
    """Requeue running jobs of every kind whose worker stopped reporting; resend lost tasks."""
    from .job_kinds import recover_stale_jobs

    return recover_stale_jobs()


def _check_loop() -> None:
    from .job_kinds import recover_stale_jobs

    while not _stop_checks.wait(settings.JOB_RECOVERY_SECONDS):
        try:
            close_old_connections()
            requeued = {kind: ids for kind, ids in recover_stale_jobs().items() if ids}
            if requeued:
                logger.warning("requeued stale jobs %s", requeued)
        except Exception:  # noqa: BLE001 - the checker must outlive a database hiccup
            logger.exception("stale job check failed")


@worker_ready.connect
def _start_checks(**_):
    if settings.JOB_RECOVERY_IN_WORKER:
        threading.Thread(target=_check_loop, name="job-recovery", daemon=True).start()


@worker_shutdown.connect
def _stop_checks_on_shutdown(**_):
    _stop_checks.set()
