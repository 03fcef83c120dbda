"""Celery entry points for training: they only adapt and call services.

Acknowledgement strategy: **early acknowledgement + heartbeat + stale-job requeue.**

With the Redis broker an unacknowledged message is redelivered once ``visibility_timeout`` (one hour
by default) passes, so ``acks_late=True`` would start a second copy of every training run longer than
that while the first still runs.  Instead ``training_run`` is acknowledged when the worker starts it
(``acks_late=False``), and the job row, not the broker, keeps the job from being lost:

* the attempt claims the job with one conditional UPDATE (``queued → running``, ``attempts + 1``): a
  duplicate delivery, or a second worker, finds it not queued and does nothing;
* while it runs, a thread refreshes ``heartbeat_at`` every TRAINING_HEARTBEAT_SECONDS;
* ``training_requeue_stale`` (Celery beat every TRAINING_STALE_CHECK_SECONDS, and also a thread in every
  worker, so no beat process is required; the thread checks the annotation app's jobs too, see
  ``prefstudio/stale_jobs.py``) finds running jobs whose heartbeat is older than
  TRAINING_HEARTBEAT_STALE_SECONDS — the worker was killed or lost — and queues them again; the next
  attempt resumes from the job's last checkpoint and drops metric points after it.  After
  TRAINING_MAX_ATTEMPTS attempts the job fails with the reason;
* an attempt whose lease was taken over (its heartbeat finds ``attempts`` changed) stops at the next step
  without writing, so a job never has two writers.

Metric points written before a checkpoint survive a kill: the buffer is flushed at every checkpoint step,
and a resumed attempt refills any gap up to its checkpoint from the engine's ``metrics.jsonl``.

Known limit: a message a worker has *prefetched* but not started is still unacknowledged; if that worker
dies, Redis redelivers it after ``visibility_timeout`` and the job waits in ``queued`` until then (prefetch
is 1, so at most one job per worker process is affected; ``worker-gpu`` runs concurrency 1).
"""

import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from prefstudio.stale_jobs import requeue_stale_jobs

from .services.jobs import training_job_requeue_stale
from .services.runner import training_job_run

logger = logging.getLogger(__name__)
_stop_checks = threading.Event()


@shared_task(name="training.tasks.training_run", acks_late=False, ignore_result=True)
def training_run(job_id: int) -> None:
    """Run (or resume) a training job; a job that is not queued any more is left alone."""
    training_job_run(job_id=job_id)


@shared_task(name="training.tasks.training_requeue_stale", ignore_result=True)
def training_requeue_stale() -> list[int]:
    """Requeue running jobs whose worker stopped sending heartbeats (resume from the last checkpoint)."""
    return training_job_requeue_stale()


def _stale_check_loop() -> None:
    while not _stop_checks.wait(settings.TRAINING_STALE_CHECK_SECONDS):
        try:
            close_old_connections()
            requeued = {kind: ids for kind, ids in requeue_stale_jobs().items() if ids}
            if requeued:
                logger.warning("requeued stale jobs %s", requeued)
        except Exception:  # noqa: BLE001 - the checker must outlive a database hiccup
            logger.exception("stale job check failed")


@worker_ready.connect
def _start_stale_checks(**_):
    if settings.TRAINING_STALE_CHECK_IN_WORKER:
        threading.Thread(target=_stale_check_loop, name="training-stale-check", daemon=True).start()


@worker_shutdown.connect
def _stop_stale_checks(**_):
    _stop_checks.set()
