"""Training job lifecycle: launch, claim, cancel, requeue stale jobs, record the outcome.

Every state change is one conditional UPDATE on the job row (the row is the source of truth, the broker
only transport), so a duplicate delivery, a second worker or a late heartbeat never acts on a job it
does not own.  ``attempts`` doubles as the lease token of the current attempt.
"""

import datetime as dt
import math
import socket
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from training.engine import ConfigError, config_from_dict, config_to_dict
from training.engine.checkpoint import latest_checkpoint

from ..models import JobState, ModelEntry, Queue, TrainingJob
from .paths import dataset_file, new_run_token, run_dir
from .registry import model_entry_problem

FIXED_FIELDS = ("model", "train_file", "output_dir", "eval_file")


def job_config_build(*, params: dict, base_model: ModelEntry, dataset_version, run_token: str) -> dict:
    """The engine config dict (``config_to_dict``) for these parameters; ConfigError names a bad field."""
    data = {k: v for k, v in params.items() if k not in FIXED_FIELDS}
    data.update(
        model=base_model.spec,
        train_file=str(dataset_file(dataset_version)),
        output_dir=str(run_dir(run_token)),
        eval_file=None,
    )
    return config_to_dict(config_from_dict(data))


def _launch_problems(*, base_model: ModelEntry, dataset_version, queue: str) -> dict:
    problems = {}
    if queue not in Queue.values:
        problems["queue"] = f"queue must be one of {', '.join(Queue.values)}, not {queue!r}."
    if (problem := model_entry_problem(base_model)) is not None:
        problems["base_model"] = problem
    if not dataset_version.examples.filter(split="train").exists():
        problems["dataset_version"] = f"{dataset_version} has no training rows."
    return problems


def training_job_launch(
    *,
    params: dict,
    base_model: ModelEntry,
    dataset_version,
    queue: str = Queue.CPU,
    created_by=None,
    run_token: str | None = None,
) -> TrainingJob:
    """Validate and queue a job; bad settings raise ValidationError naming the field (never the worker)."""
    problems = _launch_problems(base_model=base_model, dataset_version=dataset_version, queue=queue)
    try:
        config = job_config_build(
            params=params,
            base_model=base_model,
            dataset_version=dataset_version,
            run_token=run_token or new_run_token(),
        )
    except ConfigError as exc:
        field, _, message = str(exc).partition(": ")
        problems[field if message else "config"] = str(exc)
    except ValueError as exc:
        problems["run_token"] = str(exc)
    if problems:
        raise ValidationError(problems)
    job = TrainingJob.objects.create(
        method=config["method"],
        config=config,
        base_model=base_model,
        dataset_version=dataset_version,
        queue=queue,
        created_by=created_by,
        total_steps=estimate_total_steps(config, dataset_version),
    )
    transaction.on_commit(lambda: job_enqueue(job))
    return job


def estimate_total_steps(config: dict, dataset_version) -> int:
    """Optimizer steps the engine will plan (before rows too long to tokenize are dropped)."""
    n_train = dataset_version.examples.filter(split="train").count()
    per_epoch = math.ceil(math.ceil(n_train / config["batch_size"]) / config["gradient_accumulation_steps"])
    total = per_epoch * config["epochs"]
    return min(total, config["max_steps"]) if config.get("max_steps") else total


def job_enqueue(job: TrainingJob) -> None:
    from ..tasks import training_run

    training_run.apply_async(args=[job.pk], queue=job.queue)


def training_job_claim(*, job_id: int) -> int | None:
    """Take a queued job for this worker; returns the attempt number (the lease), or None if taken."""
    now = timezone.now()
    claimed = TrainingJob.objects.filter(pk=job_id, state=JobState.QUEUED, cancel_requested=False).update(
        state=JobState.RUNNING,
        attempts=F("attempts") + 1,
        worker_host=socket.gethostname()[:200],
        heartbeat_at=now,
        running_since=now,
        started_at=Coalesce(F("started_at"), now),
        started_step=F("step"),
    )
    if not claimed:
        return None
    return TrainingJob.objects.values_list("attempts", flat=True).get(pk=job_id)


def training_job_heartbeat(*, job_id: int, attempt: int, **fields) -> bool:
    """Refresh the heartbeat (and progress ``fields``) while this attempt still owns the job."""
    return bool(
        TrainingJob.objects.filter(pk=job_id, attempts=attempt, state=JobState.RUNNING).update(
            heartbeat_at=timezone.now(), **fields
        )
    )


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """Ask a job to stop: a queued job is cancelled at once, a running one stops before its next step."""
    now = timezone.now()
    TrainingJob.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED, cancel_requested=True, finished_at=now
    )
    TrainingJob.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def training_job_finish(
    *, job_id: int, attempt: int, state: str, step: int | None = None, error: str = "", traceback: str = ""
) -> bool:
    """Record the outcome of the attempt that owns the job."""
    fields = {"state": state, "finished_at": timezone.now(), "error": error[:10000], "traceback": traceback}
    if step is not None:
        fields["step"] = step
        if state == JobState.SUCCEEDED:
            fields["total_steps"] = step
    return bool(
        TrainingJob.objects.filter(pk=job_id, attempts=attempt, state=JobState.RUNNING).update(**fields)
    )


def training_job_requeue_stale(*, now: dt.datetime | None = None) -> list[int]:
    """Running jobs whose heartbeat is older than TRAINING_HEARTBEAT_STALE_SECONDS: queued again to resume
    from their last checkpoint, or failed once TRAINING_MAX_ATTEMPTS attempts have been used."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.TRAINING_HEARTBEAT_STALE_SECONDS)
    requeued = []
    for job in TrainingJob.objects.filter(state=JobState.RUNNING, heartbeat_at__lt=cutoff):
        stale = TrainingJob.objects.filter(
            pk=job.pk, state=JobState.RUNNING, attempts=job.attempts, heartbeat_at__lt=cutoff
        )
        if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
            stale.update(
                state=JobState.FAILED,
                finished_at=now,
                error=(
                    f"The worker ({job.worker_host}) stopped sending heartbeats (last at "
                    f"{job.heartbeat_at:%H:%M:%S} UTC) and all {job.attempts} attempts are used up."
                ),
            )
            continue
        checkpoint = latest_checkpoint(Path(job.config["output_dir"]))
        if stale.update(state=JobState.QUEUED, resume_from=str(checkpoint or ""), heartbeat_at=None):
            requeued.append(job.pk)
            job_enqueue(job)
    return requeued
