"""Candidate generation: a registered model samples K responses per item (on-policy candidates), or
checks a step-wise project's solutions and proposes Step-DPO pairs; image-pair jobs (a diffusion model
sampling K images per caption) share this job kind and runner, their body is ``image_generation.py``;
so do reward-model scoring jobs (a reward model scores a project's candidates), body in ``scoring.py``,
DPO-vs-reward-model comparisons under a shift, body in ``reward_comparison.py``, PPO-vs-DPO
comparisons on held-out prompts, body in ``policy_comparison.py``, and tries of a trained model against
its base, body in ``try_it.py``.  Each reports its stage (``generation_stages.py``): loading its model,
then its work counted n of N.

A ``GenerationJob`` row is the source of truth (state, progress, error); the job core's lease
(``jobs.leases``) makes a duplicate delivery do nothing.  Candidates are written through the annotation
app's services (``annotation/services/candidates.py``), each item in one transaction, so a job that dies
half-way leaves whole items only and its next attempt resumes with the items still to fill.
"""

import hashlib
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotation.models import Project, TaskType
from annotation.services.candidates import (
    GENERATION_TYPES,
    candidates_add,
    item_prompt,
    items_filled_by,
    items_to_fill,
)
from annotation.services.step_pipeline import model_step_sampler, step_pipeline_run
from jobs.leases import Lease, LeaseLost, job_claim
from jobs.models import JobState
from jobs.recovery import JobKind, seconds_setting, setting
from jobs.sending import job_send_on_commit

from ..generation_stages import LOADING, RUNNING, stage_line
from ..models import GenerationJob, GenerationKind
from .image_generation import image_pairs_job_run
from .policy_comparison import policy_comparison_job_body
from .registry import model_entry_ensure_bundled
from .reward_comparison import reward_comparison_job_body
from .scoring import Scorer, model_scorer, reward_scores_job_body
from .threads import torch_threads
from .try_it import try_it_job_body

# (prompts, settings, seed) -> one completion per prompt
Sampler = Callable[[Sequence, "GenerationSettings", int], list[str]]


@dataclass(frozen=True)
class GenerationSettings:
    """How candidates are sampled; stored on the job and in each candidate's provenance."""

    k: int = 2
    """Responses sampled per item (2..16; a ranking needs at least 2)."""
    temperature: float = 0.8
    """Sampling temperature (> 0, at most 2)."""
    top_p: float = 0.95
    """Nucleus mass, in (0, 1]."""
    max_new_tokens: int = 128
    """Most tokens per response (1..2048)."""
    seed: int = 0
    """Base seed; item i samples with seed_for(seed, item id)."""

    def __post_init__(self) -> None:
        errors = {}
        if not isinstance(self.k, int) or not 1 <= self.k <= 16:
            errors["k"] = f"k must be an integer from 1 to 16, not {self.k!r}."
        if not 0 < self.temperature <= 2:
            errors["temperature"] = f"temperature must be above 0 and at most 2, not {self.temperature!r}."
        if not 0 < self.top_p <= 1:
            errors["top_p"] = f"top_p must be above 0 and at most 1, not {self.top_p!r}."
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 2048:
            errors["max_new_tokens"] = f"max_new_tokens must be from 1 to 2048, not {self.max_new_tokens!r}."
        if errors:
            raise ValidationError(errors)


def seed_for(base: int, item_id: int) -> int:
    """A per-item seed that does not depend on which other items the job covers."""
    digest = hashlib.sha256(f"{base}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def model_sampler(spec: str) -> Sampler:
    """Load the model once and return a sampler built on the engine's ``generate`` (imports torch)."""
    from training.engine.lm.generate import GenerationConfig, generate
    from training.engine.lm.models import load_model, load_tokenizer

    model, tokenizer = load_model(spec), load_tokenizer(spec)

    def sample(prompts: Sequence, settings: GenerationSettings, seed: int) -> list[str]:
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            mode="sample",
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=seed,
        )
        return generate(model, tokenizer, list(prompts), config)

    return sample


def generation_job_create(
    *,
    project: Project,
    settings: GenerationSettings,
    model=None,
    spec: str | None = None,
    kind: str = GenerationKind.CANDIDATES,
    created_by=None,
) -> GenerationJob:
    """Queue a job; ``model`` is a ModelEntry (the bundled SmolLM2 when neither it nor ``spec`` is given)."""
    if kind == GenerationKind.CANDIDATES and project.task_type not in GENERATION_TYPES:
        raise ValidationError(
            f"Candidate generation fills pairwise, ranking, step-wise and factuality projects, "
            f"not {project.get_task_type_display()} projects."
        )
    comparing = (TaskType.PAIRWISE, TaskType.RANKING)
    if kind == GenerationKind.CANDIDATES and project.task_type in comparing and settings.k < 2:
        label = project.get_task_type_display()
        raise ValidationError({"k": f"A {label} project needs at least 2 responses per item."})
    if kind == GenerationKind.STEP_PIPELINE and project.task_type != TaskType.STEPWISE:
        raise ValidationError("Automatic step checking runs on step-wise projects.")
    if model is None and spec is None:
        model = model_entry_ensure_bundled()
    job = GenerationJob.objects.create(
        project=project,
        kind=kind,
        model=model,
        model_spec=spec or model.spec,
        options=asdict(settings),
        created_by=created_by,
    )
    job_send_on_commit(GENERATION_JOBS, job.pk)
    return job


def _enqueue(job_id: int) -> None:
    from ..tasks import generation_run

    generation_run.delay(job_id)


def generation_job_cancel(*, job: GenerationJob) -> bool:
    """Stop a queued or running job: the row is marked cancelled at once, so a queued job is never claimed
    and a running one loses its lease at its next progress report (image generation writes nothing then;
    text generation keeps the items it finished).  False when the job had already finished."""
    active = (JobState.QUEUED, JobState.RUNNING)
    stopped = GenerationJob.objects.filter(pk=job.pk, state__in=active).update(
        state=JobState.CANCELLED, finished_at=timezone.now()
    )
    return bool(stopped)


def generation_job_progress_set(*, lease: Lease, done: int, total: int) -> None:
    """Record progress (the model is loaded by now); it doubles as the worker's heartbeat. Raises
    LeaseLost after a takeover."""
    lease.renew(stage=RUNNING, progress_done=done, progress_total=total)


GENERATION_JOBS = JobKind(
    name="generation",
    model=GenerationJob,
    enqueue=_enqueue,
    stale_after=seconds_setting("ANNOTATION_JOB_STALE_SECONDS"),
    max_attempts=setting("ANNOTATION_JOB_MAX_ATTEMPTS"),
    fail=lambda job: {"error": f"The worker stopped reporting {job.attempts} times; giving up."},
)
"""Generations whose worker died resume where they stopped: the heartbeat is written after each item, so
the stale limit must exceed the longest item (K samples)."""


def generation_job_run(
    *,
    job_id: int,
    sampler_factory: Callable[[str], Sampler] = model_sampler,
    scorer_factory: Callable[..., Scorer] = model_scorer,
) -> None:
    """Run a queued job to the end (the Celery task calls this); errors end up on the row."""
    lease = job_claim(GenerationJob, pk=job_id, stage=LOADING)
    if lease is None:
        return
    job = GenerationJob.objects.select_related("project").get(pk=job_id)
    torch.set_num_threads(torch_threads())
    try:
        if job.kind == GenerationKind.IMAGE_PAIRS:
            image_pairs_job_run(job=job, lease=lease)  # records its outcome in the transaction of its items
            return
        if job.kind == GenerationKind.REWARD_SCORES:
            result = reward_scores_job_body(job=job, lease=lease, scorer_factory=scorer_factory)
        elif job.kind == GenerationKind.REWARD_COMPARISON:
            result = reward_comparison_job_body(job=job, lease=lease)
        elif job.kind == GenerationKind.POLICY_COMPARISON:
            result = policy_comparison_job_body(job=job, lease=lease)
        elif job.kind == GenerationKind.TRY_IT:
            result = try_it_job_body(job=job, lease=lease)
        elif job.kind == GenerationKind.STEP_PIPELINE:
            result = _step_pipeline_job_body(job=job, lease=lease, sampler_factory=sampler_factory)
        else:
            result = _candidates_job_body(job=job, lease=lease, sampler=sampler_factory(job.model_spec))
    except LeaseLost:
        return
    except Exception as error:  # the row must say why; the worker keeps running
        lease.finish(JobState.FAILED, error=str(error), traceback=traceback.format_exc(limit=5))
        return
    lease.finish(JobState.SUCCEEDED, result=result)


def _candidates_job_body(*, job: GenerationJob, lease: Lease, sampler: Sampler) -> dict:
    settings = GenerationSettings(**job.options)
    items = list(items_to_fill(project=job.project))
    finished = items_filled_by(project=job.project, job_id=job.pk)  # a resumed job skips these
    generation_job_progress_set(lease=lease, done=len(finished), total=len(items))
    created = tasks = 0
    model_name = job.model.name if job.model else job.model_spec
    todo = [item for item in items if item.pk not in finished]
    for done, item in enumerate(todo, start=len(items) - len(todo) + 1):
        seed = seed_for(settings.seed, item.pk)
        texts = sampler([item_prompt(item, job.project.task_type)] * settings.k, settings, seed)
        provenance = {"kind": "model", "model": model_name}
        provenance.update(spec=job.model_spec, job=job.pk, **asdict(settings), item_seed=seed)
        n_candidates, n_tasks = candidates_add(item=item, texts=texts, provenance=provenance)
        created, tasks = created + n_candidates, tasks + n_tasks
        generation_job_progress_set(lease=lease, done=done, total=len(items))
    result = {"items": len(items), "candidates": created, "tasks": tasks}
    return {**result, "resumed_after": len(finished)} if finished else result


def _step_pipeline_job_body(*, job: GenerationJob, lease: Lease, sampler_factory) -> dict:
    """The job body for kind ``step_pipeline``: check the solutions, propose Step-DPO pairs."""
    settings = GenerationSettings(**job.options)
    sample = sampler_factory(job.model_spec)

    def progress(done: int, total: int) -> None:
        generation_job_progress_set(lease=lease, done=done, total=total)

    provenance = {"kind": "model", "spec": job.model_spec, "job": job.pk, **asdict(settings)}
    return step_pipeline_run(
        project=job.project,
        sampler=model_step_sampler(lambda prompts, s: sample(prompts, settings, s)),
        n=settings.k,
        seed=settings.seed,
        provenance=provenance,
        on_progress=progress,
    )


def generation_job_progress(job: GenerationJob) -> dict:
    """Plain figures for the progress fragment."""
    total, done = job.progress_total, job.progress_done
    percent = round(100 * done / total, 1) if total else 0.0
    line = "" if job.finished else stage_line(kind=job.kind, stage=job.stage, done=done, total=total)
    return {"percent": percent, "finished": job.finished, "done": done, "total": total, "stage_line": line}
