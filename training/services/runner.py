"""The body of a training attempt (what the Celery task calls): claim, export, train, record.

The attempt holds a lease (``attempts`` at claim time).  A heartbeat thread refreshes ``heartbeat_at``
while the lease holds; each step the engine asks ``should_cancel``, which reads the cancel flag and the
lease in one primary-key query.  Losing the lease (the job was requeued as stale, or finished elsewhere)
aborts the attempt without writing anything more, so one job never has two writers.
"""

import logging
import math
import threading
import time
import traceback as tb
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction

from annotation.services.exports import export_write
from training.engine import NonFiniteError, config_from_dict, train
from training.engine.checkpoint import latest_checkpoint, load_state
from training.engine.metrics import read_metrics

from ..models import JobState, TrainingJob
from .artifacts import artifacts_record, final_model_folder
from .evaluation import evaluation_run
from .joblog import JobLog
from .jobs import training_job_claim, training_job_finish, training_job_heartbeat
from .metrics import DbMetrics, metrics_delete_after, metrics_write_batch
from .paths import dataset_file
from .registry import model_entry_register_from_job

logger = logging.getLogger(__name__)


class LeaseLostError(RuntimeError):
    """Another attempt (or a stale-job check) took over this job: stop without writing."""


class Lease:
    """This attempt's hold on the job.

    A background thread writes the buffered metric points every TRAINING_METRICS_FLUSH_SECONDS (each flush
    also refreshes the heartbeat and progress) and sends a bare heartbeat every TRAINING_HEARTBEAT_SECONDS
    when there is nothing to flush (model loading, reference log-probs).  ``should_cancel`` (before every
    step) reads the cancel flag and the lease in one primary-key query, every step as long as those
    queries stay under TRAINING_CANCEL_CHECK_SHARE of the time, less often otherwise (and never less
    often than every TRAINING_CANCEL_POLL_SECONDS, when that is set)."""

    def __init__(self, job_id: int, attempt: int, metrics: DbMetrics | None = None):
        self.job_id, self.attempt, self.metrics = job_id, attempt, metrics
        self.lost = threading.Event()
        self.stop = threading.Event()
        self.last_poll, self.interval, self.cancel = 0.0, 0.0, False
        self.thread = threading.Thread(target=self._run, name=f"job-{job_id}-lease", daemon=True)

    def _run(self) -> None:
        tick = min(settings.TRAINING_METRICS_FLUSH_SECONDS, settings.TRAINING_HEARTBEAT_SECONDS)
        last_beat = time.monotonic()
        try:
            while not self.stop.wait(tick) and not self.lost.is_set():
                try:
                    if self.metrics is not None and self.metrics.pending():
                        self.metrics.flush()
                        last_beat = time.monotonic()
                    elif time.monotonic() - last_beat >= settings.TRAINING_HEARTBEAT_SECONDS:
                        if not training_job_heartbeat(job_id=self.job_id, attempt=self.attempt):
                            self.lost.set()
                        last_beat = time.monotonic()
                except Exception:  # noqa: BLE001 - a database hiccup must not end the heartbeat
                    logger.exception("job %s: flush/heartbeat failed; retrying", self.job_id)
        finally:
            connection.close()

    def should_cancel(self) -> bool:
        if self.lost.is_set():
            raise LeaseLostError(f"job {self.job_id}: attempt {self.attempt} no longer owns the job")
        now = time.monotonic()
        if now - self.last_poll >= self.interval:
            tick = time.perf_counter()
            row = TrainingJob.objects.filter(pk=self.job_id).values_list(
                "cancel_requested", "attempts", "state"
            )
            cancel, attempts, state = row.get()
            cost = time.perf_counter() - tick
            self.last_poll = now
            share = settings.TRAINING_CANCEL_CHECK_SHARE
            self.interval = min(settings.TRAINING_CANCEL_POLL_SECONDS or math.inf, cost / share)
            if attempts != self.attempt or state != JobState.RUNNING:
                self.lost.set()
                return self.should_cancel()
            self.cancel = cancel
        return self.cancel

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def dataset_export_ensure(version) -> Path:
    """The version's JSONL export on disk (written once, atomically; versions are immutable)."""
    path = dataset_file(version)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        with tmp.open("wb") as out:
            export_write(version=version, fmt="jsonl", split="all", out=out)
        tmp.replace(path)
    return path


def _resume_point(job: TrainingJob, log: JobLog) -> int:
    """Drop metric points the resumed attempt will recompute, and fill in points up to the checkpoint that
    the killed attempt logged but had not flushed yet (from the engine's metrics.jsonl, written before each
    checkpoint); returns the step it resumes from."""
    out = Path(job.config["output_dir"])
    checkpoint = latest_checkpoint(out)
    step = load_state(checkpoint).step if checkpoint else 0
    metrics_delete_after(job_id=job.pk, step=step)
    if checkpoint is not None and (out / "metrics.jsonl").is_file():
        wall = checkpoint.stat().st_mtime
        points = [
            (row["step"], name, float(value), wall)
            for row in read_metrics(out / "metrics.jsonl")
            if row["step"] <= step
            for name, value in row.items()
            if name != "step"
        ]
        metrics_write_batch(job_id=job.pk, points=points)
    log.write(
        f"resuming from {checkpoint.name if checkpoint else 'the start (no checkpoint yet)'} (step {step})"
    )
    return step


def training_job_run(*, job_id: int) -> str | None:
    """Run one attempt of a job; returns the final state, or None when the job was not ours to run."""
    attempt = training_job_claim(job_id=job_id)
    if attempt is None:
        logger.info("training job %s: not queued (duplicate delivery or cancelled); nothing to do", job_id)
        return None
    job = TrainingJob.objects.select_related("dataset_version", "base_model").get(pk=job_id)
    log = JobLog.for_job(job)
    log.write(
        f"attempt {attempt} on {job.worker_host}: {job.method} from {job.base_model} on {job.dataset_version}"
    )
    try:
        with Lease(job_id, attempt) as lease:
            return _run_attempt(job, attempt, lease, log)
    except LeaseLostError as exc:
        log.write(f"stopped: {exc}")
        return None
    finally:
        close_old_connections()


def _progress(job_id: int, attempt: int, lease: Lease, log: JobLog):
    def on_flush(step: int, points) -> None:
        log.write_points(points)
        if not training_job_heartbeat(job_id=job_id, attempt=attempt, step=step):
            lease.lost.set()

    return on_flush


def _run_attempt(job: TrainingJob, attempt: int, lease: Lease, log: JobLog) -> str:
    db = DbMetrics(
        job.pk, on_flush=_progress(job.pk, attempt, lease, log), flush_every=job.config.get("save_steps")
    )
    lease.metrics = db
    try:
        resume = attempt > 1
        db.step = _resume_point(job, log) if resume else 0
        config = config_from_dict(job.config)
        dataset_export_ensure(job.dataset_version)
        result = train(config, callbacks=[db], should_cancel=lease.should_cancel, resume=resume)
        db.flush()
    except LeaseLostError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job row
        if db.buffer:
            db.flush()
        kind = "training stopped" if isinstance(exc, NonFiniteError) else type(exc).__name__
        log.write(f"failed: {kind}: {exc}")
        training_job_finish(
            job_id=job.pk,
            attempt=attempt,
            state=JobState.FAILED,
            error=f"{kind}: {exc}",
            traceback=tb.format_exc(),
        )
        return JobState.FAILED
    if result.status == "cancelled":
        log.write(f"cancelled before step {result.step + 1}; checkpoint {result.last_checkpoint}")
        training_job_finish(job_id=job.pk, attempt=attempt, state=JobState.CANCELLED, step=result.step)
        artifacts_record(job=job)
        return JobState.CANCELLED
    return _succeed(job, attempt, result, log)


def _succeed(job: TrainingJob, attempt: int, result, log: JobLog) -> str:
    final = (
        result.last_checkpoint is not None
        and Path(result.last_checkpoint).name == f"checkpoint-{result.step}"
    )
    folder = final_model_folder(job=job, result=result) if final else None
    if folder is not None:
        _evaluate(job, folder, result, log)
    artifacts_record(job=job)
    # One transaction: whoever sees the job succeeded also sees its registered model.
    with transaction.atomic():
        if not training_job_finish(
            job_id=job.pk, attempt=attempt, state=JobState.SUCCEEDED, step=result.step
        ):
            return JobState.SUCCEEDED
        entry = model_entry_register_from_job(job=job, folder=folder) if folder is not None else None
    if entry is None:
        log.write(
            f"succeeded after {result.step} steps; no final checkpoint (save_final off), no model registered"
        )
    else:
        log.write(f"succeeded after {result.step} steps; registered model {entry.name}")
    return JobState.SUCCEEDED


def _evaluate(job: TrainingJob, folder: Path, result, log: JobLog) -> None:
    try:
        accuracy = result.eval_metrics.get("eval/rewards/accuracies")
        evaluation_run(job=job, trained_folder=folder, implicit_accuracy=accuracy)
    except Exception as exc:  # noqa: BLE001 - the model trained fine; the report is a bonus
        log.write(f"evaluation report skipped: {type(exc).__name__}: {exc}")
