"""Training job lifecycle: launch, claim, cancel, and how the job core recovers a job whose worker died.

Every state change is one conditional UPDATE on the job row (the row is the source of truth, the broker
only transport), so a duplicate delivery, a second worker or a late heartbeat never acts on a job it
does not own (``jobs.leases``).
"""

import dataclasses
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from annotation.text import value_problems
from jobs.leases import Lease, job_claim
from jobs.models import JobState
from jobs.recovery import JobKind, seconds_setting, setting
from jobs.sending import job_send_on_commit
from training.engine import METHODS, ConfigError, config_from_dict, config_to_dict, planned_steps
from training.engine.methods import method_of
from training.engine.runtime.checkpoint import latest_checkpoint

from ..models import Location, ModelEntry, Queue, TrainingJob
from .paths import dataset_file, encode_cache_dir, new_run_token, reference_cache_dir, run_dir
from .prompt_sources import (
    PromptSource,
    PromptSourceError,
    prompt_file,
    prompt_file_write,
    prompt_source_resolve,
)
from .registry import model_entry_problem, model_kind_problem
from .rlhf import method_samples_policy, model_refs_resolve, version_has_prompts

FIXED_FIELDS = (
    "model",
    "train_file",
    "output_dir",
    "eval_file",
    "ref_cache_dir",
    "encode_cache_dir",
    "dpo_reference",
)
"""Config fields the server sets (every path): whatever a client sends for them is ignored."""
EVAL_GENERATIONS = 4
"""Held-out prompts a finished job's base and trained models answer by default (``evaluation_run``)."""
MAX_EVAL_GENERATIONS = 32
SOURCE_PARAMS = ("prompt_source", "prompt_list")
"""Launch parameters that are not config fields: where a PPO/RTO job's prompts come from."""
CONFIG_MAX_DEPTH = 6
"""Lists and objects nested in a config (``extra_losses`` entries hold a ``params`` object: three)."""


def job_config_build(
    *, params: dict, base_model: ModelEntry, dataset_version, run_token: str, user=None
) -> dict:
    """The engine config dict (``config_to_dict``) for these parameters; ConfigError names a bad field
    (text the database cannot store and nesting no config has are refused before the engine sees them).
    A model field besides the base (``reward_model``, …) takes an entry ``user`` may use (None: any, for
    the command line) and gets its spec (``rlhf.model_refs_resolve``)."""
    return job_plan_build(
        params=params, base_model=base_model, dataset_version=dataset_version, run_token=run_token, user=user
    )[0]


def job_plan_build(
    *, params: dict, base_model: ModelEntry, dataset_version, run_token: str, user=None
) -> tuple[dict, PromptSource]:
    """``(config, prompt source)``: ``job_config_build`` and where a PPO/RTO job's prompts come from (its
    ``train_file`` is then the run's ``prompts.jsonl``, which ``training_job_queue`` writes)."""
    method = str(params.get("method", "dpo"))
    refs, ref_problems = model_refs_resolve(method=method, params=params, user=user)
    if ref_problems:
        raise ConfigError("{}: {}".format(*next(iter(ref_problems.items()))))
    source = _prompt_source(method, params, dataset_version)
    data = {
        k: v for k, v in params.items() if k not in FIXED_FIELDS and k not in refs and k not in SOURCE_PARAMS
    }
    if problems := value_problems(data, "", max_depth=CONFIG_MAX_DEPTH)[1]:
        raise ConfigError("{}: {}".format(*problems[0]))
    data.update(refs)
    data.update(
        model=base_model.spec,
        train_file=str(prompt_file(run_token) if source.writes_file else dataset_file(dataset_version)),
        output_dir=str(run_dir(run_token)),
        eval_file=None,
    )
    fields = {f.name for f in dataclasses.fields(method_of(str(data.get("method", "dpo"))).config)}
    caches = {"ref_cache_dir": reference_cache_dir(), "encode_cache_dir": encode_cache_dir()}
    data.update({name: str(folder) for name, folder in caches.items() if name in fields})
    config = config_to_dict(config_from_dict(data))
    distributed_problem(method, config)
    estimate_total_steps(config, dataset_version, source)  # a plan too long to run: ConfigError naming epochs
    return config, source


def distributed_problem(method: str, config: dict) -> None:
    """ConfigError naming the field when a job's processes or nodes cannot run as asked."""
    recipe = METHODS[method].recipe
    for field in ("processes_per_node", "nodes"):
        if config.get(field, 1) > 1 and not recipe.supports_distributed:
            raise ConfigError(f"{field}: {method} trains in one process only (for now); set it to 1")
    if config.get("strategy") == "fsdp":
        if config.get("processes_per_node", 1) * config.get("nodes", 1) == 1:
            raise ConfigError(
                "strategy: fsdp shards the model across processes; set processes_per_node (or nodes) "
                "above 1, or use ddp"
            )
        if not recipe.supports_fsdp:
            raise ConfigError(f"strategy: {method} does not shard with FSDP yet; use ddp")
    if config.get("nodes", 1) > 1 and not settings.TRAINING_SHARED_STORAGE:
        raise ConfigError(
            f"nodes: a job on {config['nodes']} nodes needs ARTIFACT_ROOT and MODEL_CACHE on storage every "
            "worker shares; once they are, set TRAINING_SHARED_STORAGE=true (docs/scaling.md)"
        )


def _prompt_source(method: str, params: dict, dataset_version) -> PromptSource:
    """The prompt source ``params`` choose; a source for a method that does not sample is a ConfigError."""
    if not method_samples_policy(method):
        if any(params.get(name) not in (None, "", [], ()) for name in SOURCE_PARAMS):
            raise ConfigError(
                f"prompt_source: {method} trains on the version's rows; only PPO and RTO sample prompts"
            )
        return PromptSource("version")
    try:
        return prompt_source_resolve(params=params, dataset_version=dataset_version)
    except PromptSourceError as exc:
        raise ConfigError(str(exc)) from None


def launch_problems(
    *, method: str, base_model: ModelEntry, dataset_version, queue: str, source: PromptSource | None = None
) -> dict:
    """Why a job of ``method`` on this model, version and queue cannot run, by field ({} when it can);
    ``source`` is where a PPO/RTO job's prompts come from (None: the version)."""
    problems = {}
    if queue not in Queue.values:
        problems["queue"] = f"queue must be one of {', '.join(Queue.values)}, not {queue!r}."
    elif queue == Queue.SLURM and not settings.TRAINING_SHARED_STORAGE:
        problems["queue"] = (
            "A Slurm job runs on the cluster's nodes and the studio reads what it writes: ARTIFACT_ROOT and "
            "MODEL_CACHE must be storage both share; once they are, set TRAINING_SHARED_STORAGE=true "
            "(docs/scaling.md)."
        )
    if problem := model_kind_problem(method=method, entry=base_model) or model_entry_problem(base_model):
        problems["base_model"] = problem
    if problem := version_problem(method=method, dataset_version=dataset_version, source=source):
        problems["dataset_version"] = problem
    return problems


def version_problem(*, method: str, dataset_version, source: PromptSource | None = None) -> str | None:
    """Why ``method`` cannot train on ``dataset_version`` (its kind, no training rows, no prompts for a
    PPO/RTO job reading them from the version), or None."""
    kind = dataset_version.project.task_type
    if method in METHODS and kind not in METHODS[method].accepts:
        accepted = ", ".join(METHODS[method].accepts)
        return f"{method} trains on {accepted} datasets; {dataset_version} is a {kind} dataset."
    if not dataset_version.examples.filter(split="train").exists():
        return f"{dataset_version} has no training rows."
    reads_version = method_samples_policy(method) and not (source and source.writes_file)
    if reads_version and not version_has_prompts(dataset_version):
        return f"{dataset_version} has no prompts to sample responses to ({method})."
    return None


def training_job_launch(
    *,
    params: dict,
    base_model: ModelEntry,
    dataset_version,
    queue: str = Queue.CPU,
    created_by=None,
    eval_generations: int = EVAL_GENERATIONS,
) -> TrainingJob:
    """Build the engine config of ``params`` and queue the job in a new output folder; bad settings raise
    ValidationError naming the field (never the worker)."""
    problems = _eval_problems(eval_generations)
    config, source, run_token = None, None, new_run_token()
    try:
        config, source = job_plan_build(
            params=params,
            base_model=base_model,
            dataset_version=dataset_version,
            run_token=run_token,
            user=created_by,
        )
    except ConfigError as exc:
        field, _, message = str(exc).partition(": ")
        problems[field if message else "config"] = str(exc)
    method = str(params.get("method", "dpo"))
    problems.update(
        launch_problems(
            method=method, base_model=base_model, dataset_version=dataset_version, queue=queue, source=source
        )
    )
    if problems:
        raise ValidationError(problems)
    return _job_create(
        config, run_token, base_model, dataset_version, queue, created_by, source, eval_generations
    )


def training_job_queue(
    *,
    config: dict,
    run_token: str,
    base_model: ModelEntry,
    dataset_version,
    queue: str = Queue.CPU,
    created_by=None,
    source: PromptSource | None = None,
    eval_generations: int = EVAL_GENERATIONS,
) -> TrainingJob:
    """Queue a job whose engine config is built (``job_plan_build`` with ``run_token``, as the launch
    form does once per POST, with the prompt source it returned); a model, version or queue it cannot run
    on, or a run token some job already has, raises ValidationError naming the field."""
    problems = launch_problems(
        method=config["method"],
        base_model=base_model,
        dataset_version=dataset_version,
        queue=queue,
        source=source,
    )
    problems.update(_eval_problems(eval_generations))
    if config.get("output_dir") != str(run_dir(run_token)):
        problems["run_token"] = "The config does not write to this run's folder; reload the form."  # noqa: S105
    if source and source.writes_file and config.get("train_file") != str(prompt_file(run_token)):
        problems["prompt_source"] = "The config does not train on this run's prompt list; reload the form."
    if problems:
        raise ValidationError(problems)
    return _job_create(
        config, run_token, base_model, dataset_version, queue, created_by, source, eval_generations
    )


def _eval_problems(eval_generations) -> dict[str, str]:
    if isinstance(eval_generations, bool) or not isinstance(eval_generations, int):
        return {"eval_generations": f"eval_generations must be a whole number, not {eval_generations!r}."}
    if not 0 <= eval_generations <= MAX_EVAL_GENERATIONS:
        return {"eval_generations": f"eval_generations must be from 0 to {MAX_EVAL_GENERATIONS}."}
    return {}


def _job_create(
    config: dict,
    run_token: str,
    base_model: ModelEntry,
    dataset_version,
    queue: str,
    created_by,
    source: PromptSource | None = None,
    eval_generations: int = 4,
) -> TrainingJob:
    """The job row and its output folder (with the prompt file of ``source``), all new: a run token can
    name one job and one folder only."""
    used = ValidationError({"run_token": "This form already launched a job; reload it to launch another."})
    try:
        with transaction.atomic():
            job = TrainingJob.objects.create(
                method=config["method"],
                config=config,
                run_token=run_token,
                base_model=base_model,
                dataset_version=dataset_version,
                queue=queue,
                created_by=created_by,
                total_steps=estimate_total_steps(config, dataset_version, source),
                eval_generations=eval_generations,
            )
            run_dir(run_token).mkdir(parents=True)
            if source and source.writes_file:
                prompt_file_write(path=prompt_file(run_token), source=source, dataset_version=dataset_version)
    except (IntegrityError, FileExistsError):
        raise used from None
    job_send_on_commit(TRAINING_JOBS, job.pk)
    return job


def estimate_total_steps(config: dict, dataset_version, source: PromptSource | None = None) -> int:
    """The engine's step plan for the version's training rows, or the prompts of ``source`` (before rows
    too long are dropped; the attempt sets the exact count when its run starts)."""
    if source and source.writes_file:
        n_train = len(source.rows)
    else:
        n_train = dataset_version.examples.filter(split="train").count()
    return planned_steps(config_from_dict(config), n_train)


def run_time_estimate(*, params: dict, base_model: ModelEntry | None, dataset_version, eval_generations: int):
    """``(seconds or None, steps)`` a CPU job of these settings should take (``presets.expected_seconds``:
    None without a measured step time for the model and settings), from the step plan on the version."""
    from ..presets import expected_seconds

    placeholder = {"model": "tiny:check", "train_file": "check.jsonl", "output_dir": "check"}
    try:
        config = config_from_dict({**params, **placeholder})
        n_train = dataset_version.examples.filter(split="train").count() if dataset_version else 0
        steps = planned_steps(config, n_train)
    except (ConfigError, TypeError, ValueError):
        return None, None
    rows = dataset_version.examples.count() if dataset_version else 0
    model = "bundled" if base_model is not None and base_model.location == Location.BUNDLED else ""
    seconds = expected_seconds(
        model=model, config=config_to_dict(config), steps=steps, rows=rows, generations=eval_generations
    )
    return seconds, steps


def job_enqueue(job: TrainingJob) -> None:
    from ..tasks import training_run

    if job.queue == Queue.SLURM:
        return  # its sbatch script runs it (``external.py``): no worker of ours takes it
    training_run.apply_async(args=[job.pk], queue=job.queue)


def training_job_claim(*, job_id: int) -> Lease | None:
    """Take a queued job for this worker; returns the attempt's lease, or None if taken or cancelled."""
    return job_claim(
        TrainingJob,
        pk=job_id,
        waiting=Q(cancel_requested=False),
        running_since=timezone.now(),
        started_step=F("step"),
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


def _resume_fields(job: TrainingJob) -> dict:
    checkpoint = latest_checkpoint(Path(job.config["output_dir"]))
    return {"resume_from": str(checkpoint or "")}


def _out_of_attempts(job: TrainingJob) -> dict:
    last = f"{job.heartbeat_at:%H:%M:%S} UTC" if job.heartbeat_at else "never"
    return {
        "error": (
            f"The worker ({job.worker_host}) stopped sending heartbeats (last at {last}) and all "
            f"{job.attempts} attempts are used up."
        )
    }


TRAINING_JOBS = JobKind(
    name="training",
    model=TrainingJob,
    enqueue=lambda pk: job_enqueue(TrainingJob.objects.get(pk=pk)),
    stale_after=seconds_setting("TRAINING_HEARTBEAT_STALE_SECONDS"),
    max_attempts=setting("TRAINING_MAX_ATTEMPTS"),
    requeue=_resume_fields,
    fail=_out_of_attempts,
    waiting=Q(cancel_requested=False),
    resend_after=seconds_setting("TRAINING_QUEUED_RESEND_SECONDS"),
    cancel_field="cancel_requested",
)
"""A training run whose worker died resumes from its last checkpoint on the next attempt (or ends
cancelled, when a cancel was asked for meanwhile); a queued one waits behind other runs, so its task is
sent again only after TRAINING_QUEUED_RESEND_SECONDS."""
