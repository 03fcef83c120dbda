"""Celery entry points for training: they only adapt and call services.

Acknowledgement strategy: **early acknowledgement + heartbeat + stale-job requeue.**

With the Redis broker an unacknowledged message is redelivered once ``visibility_timeout`` (one hour
by default) passes, so ``acks_late=True`` would start a second copy of every training run longer than
that while the first still runs.  Instead ``training_run`` is acknowledged when the worker starts it
(``acks_late=False``), and the job row, not the broker, keeps the job from being lost (the job core,
``jobs/``, does this for every kind of job):

* the attempt claims the job with one conditional UPDATE (``queued → running``, ``attempts + 1``): a
  duplicate delivery, or a second worker, finds it not queued and does nothing;
* while it runs, a thread refreshes ``heartbeat_at`` every TRAINING_HEARTBEAT_SECONDS;
* the periodic recovery (``prefstudio/job_kinds.py``: Celery beat every JOB_RECOVERY_SECONDS, and also a
  thread in every worker, so no beat process is required) finds running jobs whose heartbeat is older
  than TRAINING_HEARTBEAT_STALE_SECONDS — the worker was killed or lost — and queues them again; the next
  attempt resumes from the job's last checkpoint and drops metric points after it.  After
  TRAINING_MAX_ATTEMPTS attempts the job fails with the reason.  A job still queued
  TRAINING_QUEUED_RESEND_SECONDS after its task was sent has it sent again (the message may have been
  lost, or prefetched by a worker that died);
* an attempt whose lease was taken over (its heartbeat finds ``attempts`` changed) stops at the next step
  without writing, so a job never has two writers.

Metric points written before a checkpoint survive a kill: the buffer is flushed at every checkpoint step,
and a resumed attempt refills any gap up to its checkpoint from the engine's ``metrics.jsonl``.
"""

from celery import shared_task
from celery.signals import worker_init

from .services.domain_streams import domain_stream_run as domain_stream_job_run
from .services.generation import generation_job_run
from .services.loops import loop_run as loop_job_run
from .services.nodes import training_node_join
from .services.runner import training_job_evaluate, training_job_run
from .services.threads import worker_slots_set


@worker_init.connect
def _record_worker_slots(sender=None, **_):
    """Each job's share of the cores (``services/threads.py``) needs the pool's concurrency."""
    worker_slots_set(getattr(sender, "concurrency", 1))


@shared_task(name="training.tasks.training_run", acks_late=False, ignore_result=True)
def training_run(job_id: int) -> None:
    """Run (or resume) a training job; a job that is not queued any more is left alone."""
    training_job_run(job_id=job_id)


@shared_task(name="training.tasks.training_node_run", acks_late=False, ignore_result=True)
def training_node_run(job_id: int, run_id: str, endpoint: str, timeout: int) -> None:
    """Join a multi-node job's attempt as one of its other nodes (``services/nodes.py``)."""
    training_node_join(job_id=job_id, run_id=run_id, endpoint=endpoint, timeout=timeout)


@shared_task(name="training.tasks.generation_run", acks_late=False, ignore_result=True)
def generation_run(job_id: int) -> None:
    """Run a queued generation or step-checking job (claims it first: a duplicate does nothing)."""
    generation_job_run(job_id=job_id)


@shared_task(name="training.tasks.training_evaluate", acks_late=False, ignore_result=True)
def training_evaluate(job_id: int) -> None:
    """Write the evaluation report of a job that a run outside the workers (Slurm) finished."""
    training_job_evaluate(job_id=job_id)


@shared_task(name="training.tasks.loop_run", acks_late=False, ignore_result=True)
def loop_run(loop_id: int) -> None:
    """Run (or resume) an online loop: its rounds' stages, each training job run in this worker."""
    loop_job_run(loop_id=loop_id)


@shared_task(name="training.tasks.domain_stream_run", acks_late=False, ignore_result=True)
def domain_stream_run(stream_id: int) -> None:
    """Train a stream of domains by sequential DPO, OFS and COFS and record their forgetting matrices."""
    domain_stream_job_run(stream_id=stream_id)
