"""The body of a training attempt (what the Celery task calls): claim, export, train, record.

The attempt holds the job core's lease (``attempts`` at claim time); ``attempt.py`` keeps it alive, asks
for cancel before every step (and between the batches of the reference and evaluation passes) and fences
every file the engine writes.  Losing the lease (the job was requeued as stale, or finished elsewhere)
aborts the attempt without writing anything more, so one job never has two writers.  Checkpoints and the
final model are recorded as artifacts when written; the outcome is published last, in the transaction that
completes the artifact list (and registers the model), so whoever sees the job finished sees all of it.
"""

import logging
import threading
import time
import traceback as tb
from pathlib import Path

import torch
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from annotation.services.exports import export_write
from jobs.models import JobState
from jobs.sending import job_send_on_commit
from training.engine import NonFiniteError, config_from_dict, train
from training.engine.runtime.checkpoint import latest_checkpoint, load_state
from training.engine.runtime.metrics import read_metrics

from ..job_stages import STAGES
from ..models import LoopRound, ModelKind, TrainingJob
from .artifacts import Digests, artifact_record, artifacts_record
from .attempt import AttemptWatch, LeaseLostError
from .child_run import ChildFailedError, ChildRun, runs_as_child
from .evaluation import diffusion_evaluation_run, evaluation_run, policy_evaluation_run
from .joblog import JobLog
from .jobs import TRAINING_JOBS, training_job_claim
from .metrics import DbMetrics, metrics_delete_after, metrics_write_batch
from .nodes import nodes_send
from .paths import dataset_file
from .registry import method_is_diffusion, model_entry_register_from_job, model_kind_trained
from .rlhf import method_samples_policy
from .threads import torch_threads

logger = logging.getLogger(__name__)


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
    lease = training_job_claim(job_id=job_id)
    if lease is None:
        logger.info("training job %s: not queued (duplicate delivery or cancelled); nothing to do", job_id)
        return None
    job = TrainingJob.objects.select_related("dataset_version", "base_model").get(pk=job_id)
    log = JobLog.for_job(job)
    log.write(
        f"attempt {lease.attempt} on {job.worker_host}: {job.method} from {job.base_model} "
        f"on {job.dataset_version}"
    )
    watch = AttemptWatch(lease)
    threads = torch_threads()
    torch.set_num_threads(threads)
    log.write(f"torch uses {threads} CPU thread{'s' if threads > 1 else ''} (TRAINING_TORCH_THREADS)")
    try:
        with watch.running():
            return _run_attempt(job, watch, log)
    except LeaseLostError as exc:
        log.write(f"stopped: {exc}")
        return None
    finally:
        close_old_connections()


class StageReporter:
    """The engine callback that records the run's stage on the job row (``on_stage``; a change at once,
    progress within a stage at most once a second) and ``training`` once the steps start; each stage is
    also appended to the job's ``stage_history`` (its start and its last n of N), earlier attempts' kept."""

    def __init__(self, lease, log: JobLog, history: list | None = None) -> None:
        self.lease, self.joblog, self.current, self.written = lease, log, None, 0.0
        self.history = list(history or [])

    def log_stage(self, stage: str, done: int = 0, total: int = 0) -> None:
        now = time.monotonic()
        changed = stage != self.current
        if changed:
            started = timezone.now().isoformat()
            self.history.append({"stage": stage, "attempt": self.lease.attempt, "started": started})
        if changed or now - self.written >= 1.0 or done == total:
            self.history[-1].update(done=done, total=total)
            self.lease.write(stage=stage, stage_done=done, stage_total=total, stage_history=self.history)
            self.written = now
        if changed:
            self.current = stage
            self.joblog.write(f"{STAGES.get(stage, stage)}…")

    def on_stage(self, stage: str, done: int, total: int) -> None:
        self.log_stage(stage, done, total)

    def on_start(self, total_steps: int, start_step: int) -> None:
        self.log_stage("training", start_step, total_steps)

    def log(self, metrics: dict[str, float], step: int) -> None:
        return None


def _run_attempt(job: TrainingJob, watch: AttemptWatch, log: JobLog) -> str | None:
    lease = watch.lease

    def on_flush(step: int, points) -> None:
        log.write_points(points)
        lease.write(step=step)

    db = DbMetrics(
        job.pk,
        on_flush=on_flush,
        on_start=lambda total_steps: lease.write(total_steps=total_steps),
        flush_every=job.config.get("save_steps"),
    )
    watch.metrics = db
    recorder = ArtifactRecorder(job, watch)
    stages = StageReporter(lease, log, job.stage_history)
    try:
        resume = lease.attempt > 1
        db.step = _resume_point(job, log) if resume else 0
        config = config_from_dict(job.config)
        dataset_export_ensure(job.dataset_version)
        if runs_as_child(job.config):
            send = lambda rendezvous: nodes_send(job=job, rendezvous=rendezvous)  # noqa: E731
            child = ChildRun(job, watch, log, metrics=db, recorder=recorder, resume=resume, send_nodes=send)
            result = child.run()
        else:
            result = train(
                config,
                callbacks=[db, recorder, stages],
                should_cancel=watch.should_cancel,
                guard=watch.fence,
                resume=resume,
            )
        db.flush()
    except LeaseLostError:
        raise
    except ChildFailedError as exc:
        if exc.lost and lease.attempt < settings.TRAINING_MAX_ATTEMPTS:
            return _retry(job, lease, log, db, exc)
        return _fail(job, lease, log, db, exc)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job row
        return _fail(job, lease, log, db, exc)
    if result.status == "cancelled":
        with transaction.atomic():
            artifacts_record(job=job, digests=recorder.digests)
            if not lease.finish(JobState.CANCELLED, step=result.step):
                raise LeaseLostError(f"job {job.pk}: attempt {lease.attempt} no longer owns the job")
        log.write(f"cancelled before step {result.step + 1}; checkpoint {result.last_checkpoint}")
        return JobState.CANCELLED
    return _succeed(job, lease, result, log, recorder.digests, stages)


def _fail(job: TrainingJob, lease, log: JobLog, db: DbMetrics, exc: Exception) -> str:
    if db.buffer:
        db.flush()
    kind = "training stopped" if isinstance(exc, NonFiniteError) else type(exc).__name__
    error = str(exc) if isinstance(exc, ChildFailedError) else f"{kind}: {exc}"
    log.write(f"failed: {error}")
    lease.finish(JobState.FAILED, error=error[:10000], traceback=tb.format_exc())
    return JobState.FAILED


def _retry(job: TrainingJob, lease, log: JobLog, db: DbMetrics, exc: ChildFailedError) -> str | None:
    """A training process was lost to a signal: queue the job for another attempt, which resumes from
    its last checkpoint, as the job core does for a worker that stopped answering."""
    if db.buffer:
        db.flush()
    if TrainingJob.objects.filter(pk=job.pk, cancel_requested=True).exists():
        log.write(f"{exc}; a cancel was asked for, so it is not retried")
        lease.finish(JobState.CANCELLED)
        return JobState.CANCELLED
    fields = TRAINING_JOBS.requeue(job)
    if not lease.write(state=JobState.QUEUED, sent_at=None, **fields):
        raise LeaseLostError(f"job {job.pk}: attempt {lease.attempt} no longer owns the job")
    lease.done.set()  # this attempt is over: its heartbeat stops
    log.write(f"{exc}; queued again for attempt {lease.attempt + 1} (resumes from its last checkpoint)")
    job_send_on_commit(TRAINING_JOBS, job.pk)
    return JobState.QUEUED


class ArtifactRecorder:
    """Records each checkpoint, sample folder (``samples/step-N``) and ``final/`` as an artifact once the
    engine has it in place (hashed then, once), while this attempt owns the job."""

    def __init__(self, job: TrainingJob, watch: AttemptWatch) -> None:
        self.job, self.watch, self.digests = job, watch, Digests()

    def log(self, metrics: dict[str, float], step: int) -> None:
        return None

    def on_saved(self, path: Path) -> None:
        with transaction.atomic():
            self.watch.fence(lock=True)
            artifact_record(job=self.job, path=path, digests=self.digests)


def _succeed(
    job: TrainingJob, lease, result, log: JobLog, digests: Digests, stages: StageReporter
) -> str | None:
    folder = result.final_model
    if folder is not None and not lease.lost.is_set():
        stages.log_stage("evaluating", 0, 2 * job.eval_generations)
        _evaluate(job, folder, result.eval_metrics, log, stages)
    if lease.lost.is_set():
        log.write("stopped: another attempt owns the job; this one records nothing")
        return None
    stages.log_stage("writing")
    training_job_succeed(job, lease, step=result.step, folder=folder, digests=digests, log=log)
    return JobState.SUCCEEDED


def training_job_succeed(
    job: TrainingJob, lease, *, step: int, folder: Path | None, digests: Digests, log: JobLog, where: str = ""
) -> None:
    """Record a finished run: its artifacts, the job succeeded, its final model registered (one
    transaction: whoever sees the job succeeded also sees all its artifacts and its registered model)."""
    with transaction.atomic():
        artifacts_record(job=job, digests=digests)
        if not lease.finish(JobState.SUCCEEDED, step=step, total_steps=step):
            raise LeaseLostError(f"job {job.pk}: attempt {lease.attempt} no longer owns the job")
        entry = model_entry_register_from_job(job=job, folder=folder) if folder is not None else None
    if entry is None:
        log.write(f"succeeded after {step} steps{where}; no final model (save_final off), none registered")
    else:
        log.write(f"succeeded after {step} steps{where}; registered model {entry.name}")


def training_job_evaluate(*, job_id: int) -> None:
    """The evaluation report of a job that succeeded outside a worker's run (a Slurm run): from its final
    model and the held-out metrics it reported."""
    job = TrainingJob.objects.get(pk=job_id)
    folder = Path(job.config["output_dir"]) / "final"
    if job.state != JobState.SUCCEEDED or not folder.is_dir():
        return
    eval_metrics = {}
    for name, value in (
        job.metric_points.filter(name__startswith="eval/").order_by("step").values_list("name", "value")
    ):
        eval_metrics[name] = value  # the last evaluation's value wins
    log = JobLog.for_job(job)
    torch.set_num_threads(torch_threads())
    _evaluate(job, folder, eval_metrics, log)


def _evaluate(
    job: TrainingJob,
    folder: Path,
    eval_metrics: dict[str, float],
    log: JobLog,
    stages: StageReporter | None = None,
) -> None:
    """Write the job's evaluation report; ``stages`` (a worker's run, not a Slurm one reporting over the
    API) follows its generations."""
    if LoopRound.objects.filter(training_job=job).exists():
        log.write("evaluation report left to the loop: it evaluates each round on its held-out prompts")
        return
    try:
        if method_is_diffusion(job.method):  # its samples and eval metrics are the report: no model loaded
            diffusion_evaluation_run(job=job, eval_metrics=eval_metrics)
            return
        if method_samples_policy(job.method):  # its held-out generations, scored as it ran, are the report
            policy_evaluation_run(job=job)
            return
        if model_kind_trained(job.method) == ModelKind.REWARD_MODEL:  # a scorer: eval/ metrics are its report
            log.write(f"held-out reward accuracy {eval_metrics.get('eval/accuracy', float('nan')):.3f}")
            return
        evaluation_run(
            job=job,
            trained_folder=folder,
            implicit_accuracy=eval_metrics.get("eval/rewards/accuracies"),
            implicit_margin=eval_metrics.get("eval/rewards/margins"),
            on_progress=None
            if stages is None
            else lambda done, total: stages.log_stage("evaluating", done, total),
        )
    except Exception as exc:  # noqa: BLE001 - the model trained fine; the report is a bonus
        log.write(f"evaluation report skipped: {type(exc).__name__}: {exc}")
